import { Center, Container, Paper, Stack, Text, Title } from '@mantine/core';
import type { ReactNode } from 'react';
import { Logo } from './Logo';
import { RESEARCH_ONLY } from './ResearchNotice';
import classes from './AuthLayout.module.css';

interface AuthLayoutProps {
  title: string;
  subtitle: ReactNode;
  children: ReactNode;
}

export function AuthLayout({ title, subtitle, children }: AuthLayoutProps) {
  return (
    <div className={classes.page}>
      <Container size={440} py={48} component="main" id="main">
        <Stack gap="lg">
          <Center>
            <Logo size={36} />
          </Center>
          <Paper withBorder shadow="sm" p="xl">
            <Title order={1} size="h3" mb={4}>
              {title}
            </Title>
            <Text c="dimmed" size="sm" mb="lg">
              {subtitle}
            </Text>
            {children}
          </Paper>
          <Text size="xs" c="dimmed" ta="center">
            Explainable spine MRI analysis for ankylosing spondylitis research.
            <br />
            {RESEARCH_ONLY}.
          </Text>
        </Stack>
      </Container>
    </div>
  );
}
