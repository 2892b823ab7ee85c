import { Alert, Anchor, Button, PasswordInput, Stack, Text, TextInput } from '@mantine/core';
import { useForm } from '@mantine/form';
import { IconClockExclamation } from '@tabler/icons-react';
import { Link, Navigate, useLocation, useNavigate } from 'react-router-dom';
import { ApiError } from '../api/errors';
import { useLogin } from '../api/queries';
import { AuthLayout } from '../components/AuthLayout';
import { ErrorAlert } from '../components/ErrorAlert';
import { useAuth, type LoginLocationState } from '../lib/auth';
import { usePageTitle } from '../lib/usePageTitle';
import { validateEmail } from '../lib/validation';

export function LoginPage() {
  usePageTitle('Log in');
  const { session } = useAuth();
  const location = useLocation();
  const navigate = useNavigate();
  const state = (location.state ?? {}) as LoginLocationState;
  const login = useLogin();
  const form = useForm({
    mode: 'controlled',
    initialValues: { email: '', password: '' },
    validate: {
      email: validateEmail,
      password: (value) => (value ? null : 'Enter your password.'),
    },
  });

  if (session && !login.isPending) {
    return <Navigate to={state.from ?? '/analyze'} replace />;
  }

  const submit = form.onSubmit((values) =>
    login.mutate(
      { email: values.email.trim(), password: values.password },
      { onSuccess: () => navigate(state.from ?? '/analyze', { replace: true }) },
    ),
  );

  const wrongCredentials = login.error instanceof ApiError && login.error.status === 401;

  return (
    <AuthLayout title="Log in" subtitle="Welcome back. Log in to analyse slices and see your history.">
      <form onSubmit={submit} noValidate aria-label="Log in">
        <Stack gap="md">
          {state.reason === 'expired' && !login.error && (
            <Alert color="blue" variant="light" icon={<IconClockExclamation size={18} aria-hidden />}>
              Your session has ended. Log in again to continue.
            </Alert>
          )}
          {login.error && (
            <ErrorAlert
              error={login.error}
              title={wrongCredentials ? 'Log-in failed' : undefined}
              hideFields={['username', 'password']}
            />
          )}
          <TextInput
            label="Email"
            type="email"
            autoComplete="email"
            required
            autoFocus
            {...form.getInputProps('email')}
          />
          <PasswordInput
            label="Password"
            autoComplete="current-password"
            required
            {...form.getInputProps('password')}
          />
          <Button type="submit" loading={login.isPending} fullWidth>
            Log in
          </Button>
          <Text size="sm" ta="center">
            No account yet?{' '}
            <Anchor component={Link} to="/signup" state={state}>
              Sign up
            </Anchor>
          </Text>
        </Stack>
      </form>
    </AuthLayout>
  );
}
