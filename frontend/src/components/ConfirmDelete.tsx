import { Button, Group, Modal, Text } from '@mantine/core';
import { ErrorAlert } from './ErrorAlert';

interface ConfirmDeleteProps {
  opened: boolean;
  title: string;
  children: React.ReactNode;
  confirmLabel?: string;
  loading?: boolean;
  error?: unknown;
  onConfirm: () => void;
  onClose: () => void;
}

/** A confirmation dialog for actions that cannot be undone. */
export function ConfirmDelete({
  opened,
  title,
  children,
  confirmLabel = 'Delete',
  loading = false,
  error,
  onConfirm,
  onClose,
}: ConfirmDeleteProps) {
  return (
    <Modal opened={opened} onClose={onClose} title={title} centered>
      <Text size="sm" mb="md">
        {children}
      </Text>
      {error != null && <ErrorAlert error={error} />}
      <Group justify="flex-end" mt="md">
        <Button variant="default" onClick={onClose} disabled={loading}>
          Cancel
        </Button>
        <Button color="red" onClick={onConfirm} loading={loading} data-testid="confirm-delete">
          {confirmLabel}
        </Button>
      </Group>
    </Modal>
  );
}
