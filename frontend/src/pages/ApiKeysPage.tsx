import {
  ActionIcon,
  Alert,
  Badge,
  Button,
  Code,
  CopyButton,
  Group,
  Modal,
  Paper,
  Skeleton,
  Stack,
  Table,
  Text,
  TextInput,
  Tooltip,
} from '@mantine/core';
import { useForm } from '@mantine/form';
import { notifications } from '@mantine/notifications';
import { IconCheck, IconCopy, IconKey, IconPlus } from '@tabler/icons-react';
import { useState } from 'react';
import type { ApiKeyCreated, ApiKeyPublic } from '../client/types.gen';
import { useApiKeys, useCreateApiKey, useRevokeApiKey } from '../api/queries';
import { ConfirmDelete } from '../components/ConfirmDelete';
import { ErrorAlert } from '../components/ErrorAlert';
import { PageHeader } from '../components/PageHeader';
import { EmptyState } from '../components/States';
import { formatDateTime } from '../lib/format';
import { usePageTitle } from '../lib/usePageTitle';

function NewKeyModal({ created, onClose }: { created: ApiKeyCreated | null; onClose: () => void }) {
  return (
    <Modal opened={created !== null} onClose={onClose} title="Your new API key" centered size="lg">
      {created && (
        <Stack gap="md">
          <Alert color="orange" variant="light" title="Copy it now">
            This is the only time the key is shown. spondyscan stores only a hash of it.
          </Alert>
          <Group gap="xs" wrap="nowrap">
            <Code block style={{ flex: 1, wordBreak: 'break-all' }} data-testid="new-api-key">
              {created.key}
            </Code>
            <CopyButton value={created.key}>
              {({ copied, copy }) => (
                <Tooltip label={copied ? 'Copied' : 'Copy'}>
                  <ActionIcon
                    variant="light"
                    size="lg"
                    onClick={copy}
                    aria-label={copied ? 'Copied' : 'Copy the key'}
                    color={copied ? 'teal' : undefined}
                  >
                    {copied ? <IconCheck size={18} aria-hidden /> : <IconCopy size={18} aria-hidden />}
                  </ActionIcon>
                </Tooltip>
              )}
            </CopyButton>
          </Group>
          <Text size="sm">
            Send it in the <Code>X-API-Key</Code> header, for example:
          </Text>
          <Code block>{`curl -H "X-API-Key: ${created.prefix}…" ${window.location.origin}/models`}</Code>
          <Group justify="flex-end">
            <Button onClick={onClose}>I have stored the key</Button>
          </Group>
        </Stack>
      )}
    </Modal>
  );
}

export function ApiKeysPage() {
  usePageTitle('API keys');
  const keys = useApiKeys();
  const create = useCreateApiKey();
  const revoke = useRevokeApiKey();
  const [created, setCreated] = useState<ApiKeyCreated | null>(null);
  const [revoking, setRevoking] = useState<ApiKeyPublic | null>(null);
  const form = useForm({
    mode: 'controlled',
    initialValues: { name: '' },
    validate: {
      name: (v) =>
        !v.trim() ? 'Give the key a name, e.g. the system that will use it.' : v.length > 100 ? 'Use at most 100 characters.' : null,
    },
  });

  const submit = form.onSubmit((values) =>
    create.mutate(values.name.trim(), {
      onSuccess: (key) => {
        setCreated(key);
        form.reset();
      },
    }),
  );

  return (
    <>
      <PageHeader
        title="API keys"
        description="Keys let hospital systems and scripts call the API as you, without your password. Revoke a key as soon as it is no longer needed."
      />
      <Stack gap="lg">
        <Paper withBorder p="md" component="section" aria-label="Create a key">
          <form onSubmit={submit} noValidate>
            <Group align="flex-end" gap="sm" wrap="wrap">
              <TextInput
                label="Key name"
                placeholder="PACS bridge"
                style={{ flex: 1, minWidth: 220 }}
                {...form.getInputProps('name')}
              />
              <Button type="submit" loading={create.isPending} leftSection={<IconPlus size={16} aria-hidden />}>
                Create key
              </Button>
            </Group>
          </form>
          {create.isError && (
            <Stack mt="sm">
              <ErrorAlert error={create.error} />
            </Stack>
          )}
        </Paper>

        {keys.isPending && <Skeleton height={120} radius="md" />}
        {keys.isError && <ErrorAlert error={keys.error} onRetry={() => void keys.refetch()} />}
        {keys.data && keys.data.length === 0 && (
          <EmptyState icon={<IconKey size={28} aria-hidden />} title="No API keys yet">
            Create a key above for each system that needs access, so each can be revoked alone.
          </EmptyState>
        )}
        {keys.data && keys.data.length > 0 && (
          <Paper withBorder>
            <Table.ScrollContainer minWidth={640}>
              <Table verticalSpacing="sm" data-testid="api-keys-table">
                <Table.Thead>
                  <Table.Tr>
                    <Table.Th scope="col">Name</Table.Th>
                    <Table.Th scope="col">Key starts with</Table.Th>
                    <Table.Th scope="col">Created</Table.Th>
                    <Table.Th scope="col">Last used</Table.Th>
                    <Table.Th scope="col">Status</Table.Th>
                    <Table.Th scope="col">
                      <span className="visually-hidden">Actions</span>
                    </Table.Th>
                  </Table.Tr>
                </Table.Thead>
                <Table.Tbody>
                  {keys.data.map((key) => (
                    <Table.Tr key={key.id}>
                      <Table.Td fw={600}>{key.name}</Table.Td>
                      <Table.Td>
                        <Code>{key.prefix}…</Code>
                      </Table.Td>
                      <Table.Td>{formatDateTime(key.created_at)}</Table.Td>
                      <Table.Td>{key.last_used_at ? formatDateTime(key.last_used_at) : 'Never'}</Table.Td>
                      <Table.Td>
                        {key.active ? (
                          <Badge color="teal" variant="light">
                            active
                          </Badge>
                        ) : (
                          <Badge color="gray" variant="light">
                            revoked {key.revoked_at ? formatDateTime(key.revoked_at) : ''}
                          </Badge>
                        )}
                      </Table.Td>
                      <Table.Td ta="right">
                        {key.active && (
                          <Button size="compact-sm" color="red" variant="subtle" onClick={() => setRevoking(key)}>
                            Revoke
                          </Button>
                        )}
                      </Table.Td>
                    </Table.Tr>
                  ))}
                </Table.Tbody>
              </Table>
            </Table.ScrollContainer>
          </Paper>
        )}
      </Stack>
      <NewKeyModal created={created} onClose={() => setCreated(null)} />
      <ConfirmDelete
        opened={revoking !== null}
        title="Revoke this key?"
        confirmLabel="Revoke"
        loading={revoke.isPending}
        error={revoke.error}
        onConfirm={() =>
          revoking &&
          revoke.mutate(revoking.id, {
            onSuccess: () => {
              notifications.show({ color: 'teal', title: 'Key revoked', message: `${revoking.name} can no longer call the API.` });
              setRevoking(null);
            },
          })
        }
        onClose={() => {
          setRevoking(null);
          revoke.reset();
        }}
      >
        Systems using <strong>{revoking?.name}</strong> will get “401 Unauthorized” from now on.
        This cannot be undone.
      </ConfirmDelete>
    </>
  );
}
