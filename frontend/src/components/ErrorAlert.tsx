import { Alert, Button, Group, List, Text } from '@mantine/core';
import { IconAlertTriangle, IconRefresh } from '@tabler/icons-react';
import { ApiError, errorMessage } from '../api/errors';

const TITLES: Record<string, string> = {
  network_error: 'Cannot reach the server',
  unsupported_format: 'Unsupported file',
  corrupt_image: 'The image could not be read',
  empty_image: 'The image is empty',
  too_large: 'The file is too large',
  bad_frame: 'That frame does not exist',
  unknown_model: 'Unknown model',
  invalid_credentials: 'Log-in failed',
  email_taken: 'Email already registered',
  busy: 'The service is busy',
  not_ready: 'The service is starting',
  not_found: 'Not found',
  forbidden: 'No access',
  validation_error: 'Please check the form',
};

/** The title shown above an error: by code when we know it, else by HTTP status. */
export function errorTitle(error: unknown): string {
  if (error instanceof ApiError) {
    if (TITLES[error.code]) return TITLES[error.code] as string;
    if (error.status === 401) return 'Not logged in';
    if (error.status === 404) return 'Not found';
    if (error.status >= 500) return 'Server error';
  }
  return 'Something went wrong';
}

interface ErrorAlertProps {
  error: unknown;
  title?: string;
  onRetry?: () => void;
  /** Field names whose errors are already shown next to their inputs. */
  hideFields?: string[];
}

/** One consistent way to show a failure: a title, the server's sentence, optional retry. */
export function ErrorAlert({ error, title, onRetry, hideFields = [] }: ErrorAlertProps) {
  const fields =
    error instanceof ApiError
      ? Object.entries(error.fields).filter(([name]) => !hideFields.includes(name))
      : [];
  return (
    <Alert
      color="red"
      variant="light"
      icon={<IconAlertTriangle size={20} aria-hidden />}
      title={title ?? errorTitle(error)}
      role="alert"
      data-testid="error-alert"
    >
      <Text size="sm">{errorMessage(error)}</Text>
      {fields.length > 0 && (
        <List size="sm" mt="xs">
          {fields.map(([name, message]) => (
            <List.Item key={name}>
              <strong>{name}</strong>: {message}
            </List.Item>
          ))}
        </List>
      )}
      {onRetry && (
        <Group mt="sm">
          <Button
            size="xs"
            variant="white"
            color="red"
            leftSection={<IconRefresh size={14} aria-hidden />}
            onClick={onRetry}
          >
            Try again
          </Button>
        </Group>
      )}
    </Alert>
  );
}
