import {
  Anchor,
  AppShell,
  Box,
  Burger,
  Button,
  Container,
  Group,
  Menu,
  NavLink as MantineNavLink,
  Text,
  UnstyledButton,
} from '@mantine/core';
import { useDisclosure } from '@mantine/hooks';
import {
  IconChevronDown,
  IconCpu,
  IconHistory,
  IconKey,
  IconListCheck,
  IconLock,
  IconLogout,
  IconScan,
  IconStack2,
  IconUserCircle,
} from '@tabler/icons-react';
import { useEffect, type ReactNode } from 'react';
import { Link, NavLink, Outlet, useLocation } from 'react-router-dom';
import { useMe } from '../api/queries';
import { useAuth } from '../lib/auth';
import { Logo } from './Logo';
import { RESEARCH_ONLY } from './ResearchNotice';
import classes from './AppLayout.module.css';

interface NavItem {
  to: string;
  label: string;
  icon: ReactNode;
}

const NAV: NavItem[] = [
  { to: '/analyze', label: 'Analyze', icon: <IconScan size={18} aria-hidden /> },
  { to: '/studies', label: 'Studies', icon: <IconStack2 size={18} aria-hidden /> },
  { to: '/jobs', label: 'Jobs', icon: <IconListCheck size={18} aria-hidden /> },
  { to: '/history', label: 'History', icon: <IconHistory size={18} aria-hidden /> },
  { to: '/models', label: 'Models', icon: <IconCpu size={18} aria-hidden /> },
  { to: '/api-keys', label: 'API keys', icon: <IconKey size={18} aria-hidden /> },
];

/** The signed-in frame: header navigation, a drawer on small screens, the research notice. */
export function AppLayout() {
  const [opened, { toggle, close }] = useDisclosure(false);
  const { logOut } = useAuth();
  const me = useMe();
  const location = useLocation();

  useEffect(() => close(), [location.pathname, close]);

  return (
    <AppShell
      header={{ height: 60 }}
      navbar={{ width: 240, breakpoint: 'md', collapsed: { desktop: true, mobile: !opened } }}
      padding="md"
    >
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between" wrap="nowrap">
          <Group gap="sm" wrap="nowrap">
            <Burger
              opened={opened}
              onClick={toggle}
              hiddenFrom="md"
              size="sm"
              aria-label={opened ? 'Close navigation' : 'Open navigation'}
            />
            <Anchor component={Link} to="/analyze" underline="never" aria-label="spondyscan home">
              <Logo />
            </Anchor>
          </Group>
          <Group gap={4} visibleFrom="md" component="nav" aria-label="Main" wrap="nowrap">
            {NAV.map((item) => (
              <Button
                key={item.to}
                component={NavLink}
                to={item.to}
                variant="subtle"
                color="gray"
                leftSection={item.icon}
                className={classes.navButton}
              >
                {item.label}
              </Button>
            ))}
          </Group>
          <Menu position="bottom-end" withinPortal>
            <Menu.Target>
              <UnstyledButton
                className={classes.user}
                // The visible e-mail is part of the name, so voice users can say what they see.
                aria-label={`${me.data?.email ?? 'Account'}: account menu`}
              >
                <Group gap={6} wrap="nowrap">
                  <IconUserCircle size={22} aria-hidden />
                  <Text size="sm" visibleFrom="lg" maw={200} truncate="end">
                    {me.data?.email ?? 'Account'}
                  </Text>
                  <IconChevronDown size={14} aria-hidden />
                </Group>
              </UnstyledButton>
            </Menu.Target>
            <Menu.Dropdown>
              {me.data && (
                <Menu.Label>
                  {me.data.email}
                  {me.data.role === 'admin' ? ' (admin)' : ''}
                </Menu.Label>
              )}
              <Menu.Item component={Link} to="/api-keys" leftSection={<IconKey size={16} aria-hidden />}>
                API keys
              </Menu.Item>
              <Menu.Item component={Link} to="/account" leftSection={<IconLock size={16} aria-hidden />}>
                Change password
              </Menu.Item>
              <Menu.Item onClick={logOut} leftSection={<IconLogout size={16} aria-hidden />} color="red">
                Log out
              </Menu.Item>
            </Menu.Dropdown>
          </Menu>
        </Group>
      </AppShell.Header>

      <AppShell.Navbar p="sm" component="nav" aria-label="Main (mobile)">
        {NAV.map((item) => (
          <MantineNavLink
            key={item.to}
            component={NavLink}
            to={item.to}
            label={item.label}
            leftSection={item.icon}
            active={location.pathname.startsWith(item.to)}
          />
        ))}
        <MantineNavLink
          component="button"
          label="Log out"
          leftSection={<IconLogout size={18} aria-hidden />}
          onClick={logOut}
          c="red"
        />
      </AppShell.Navbar>

      <AppShell.Main className={classes.main}>
        <Container size="xl" px={0} w="100%" component="main" id="main">
          <Outlet />
        </Container>
        <Box component="footer" className={classes.footer}>
          <Text size="xs" c="dimmed" ta="center">
            spondyscan · {RESEARCH_ONLY}. Results come from models trained on rule-derived labels.
          </Text>
        </Box>
      </AppShell.Main>
    </AppShell>
  );
}
