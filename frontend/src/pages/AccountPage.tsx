import { Button, Paper, PasswordInput, Stack, Text } from '@mantine/core';
import { useForm } from '@mantine/form';
import { notifications } from '@mantine/notifications';
import { ApiError } from '../api/errors';
import { useChangePassword, useLimits } from '../api/queries';
import { ErrorAlert } from '../components/ErrorAlert';
import { PageHeader } from '../components/PageHeader';
import { usePageTitle } from '../lib/usePageTitle';
import { validateNewPassword } from '../lib/validation';

/** Change the password: every other session of the account is logged out by it. */
export function AccountPage() {
  usePageTitle('Change password');
  const change = useChangePassword();
  const minPassword = useLimits().data?.min_password_length;
  const form = useForm({
    mode: 'controlled',
    initialValues: { current: '', next: '', confirm: '' },
    validate: {
      current: (value) => (value ? null : 'Enter your current password.'),
      next: (value) => validateNewPassword(value, minPassword),
      confirm: (value, values) => (value === values.next ? null : 'The passwords do not match.'),
    },
  });

  const submit = form.onSubmit((values) =>
    change.mutate(
      { current: values.current, next: values.next },
      {
        onSuccess: () => {
          form.reset();
          notifications.show({
            color: 'teal',
            title: 'Password changed',
            message: 'Other sessions of your account have been logged out.',
          });
        },
        onError: (error) => {
          if (error instanceof ApiError && error.code === 'invalid_current_password') {
            form.setFieldError('current', error.message);
          }
        },
      },
    ),
  );

  return (
    <>
      <PageHeader
        title="Change password"
        description="Changing it logs out every other session of your account; API keys keep working."
      />
      <Paper withBorder p="lg" maw={480}>
        <form onSubmit={submit} noValidate aria-label="Change password">
          <Stack gap="md">
            {change.error && !(change.error instanceof ApiError && change.error.code === 'invalid_current_password') && (
              <ErrorAlert error={change.error} />
            )}
            <PasswordInput
              label="Current password"
              autoComplete="current-password"
              required
              {...form.getInputProps('current')}
            />
            <PasswordInput
              label="New password"
              description={minPassword ? `At least ${minPassword} characters.` : undefined}
              autoComplete="new-password"
              required
              {...form.getInputProps('next')}
            />
            <PasswordInput
              label="Confirm new password"
              autoComplete="new-password"
              required
              {...form.getInputProps('confirm')}
            />
            <Text size="sm" c="dimmed">
              Research use only: spondyscan keeps your analyses private to your account.
            </Text>
            <Button type="submit" loading={change.isPending}>
              Change password
            </Button>
          </Stack>
        </form>
      </Paper>
    </>
  );
}
