import { Anchor, Button, List, PasswordInput, Stack, Text, TextInput } from '@mantine/core';
import { useForm } from '@mantine/form';
import { Link, Navigate, useLocation, useNavigate } from 'react-router-dom';
import { ApiError } from '../api/errors';
import { useLimits, useSignup } from '../api/queries';
import { AuthLayout } from '../components/AuthLayout';
import { ErrorAlert } from '../components/ErrorAlert';
import { useAuth, type LoginLocationState } from '../lib/auth';
import { usePageTitle } from '../lib/usePageTitle';
import { validateEmail, validateNewPassword } from '../lib/validation';

export function SignupPage() {
  usePageTitle('Sign up');
  const { session } = useAuth();
  const navigate = useNavigate();
  const location = useLocation();
  const state = (location.state ?? {}) as LoginLocationState;
  const signup = useSignup();
  const minPassword = useLimits().data?.min_password_length;
  const form = useForm({
    mode: 'controlled',
    initialValues: { email: '', password: '', confirm: '' },
    validate: {
      email: validateEmail,
      password: (value) => validateNewPassword(value, minPassword),
      confirm: (value, values) => (value === values.password ? null : 'The passwords do not match.'),
    },
  });

  if (session && !signup.isPending) return <Navigate to={state.from ?? '/analyze'} replace />;

  const submit = form.onSubmit((values) =>
    signup.mutate(
      { email: values.email.trim(), password: values.password },
      {
        onSuccess: () => navigate(state.from ?? '/analyze', { replace: true }),
        onError: (error) => {
          // Put the server's field messages next to their inputs as well.
          if (error instanceof ApiError) {
            if (error.code === 'email_taken') form.setFieldError('email', error.message);
            for (const [field, message] of Object.entries(error.fields)) {
              if (field === 'email' || field === 'password') form.setFieldError(field, message);
            }
          }
        },
      },
    ),
  );

  return (
    <AuthLayout
      title="Create an account"
      subtitle="Your analyses are private to your account; only you (and administrators) can see them."
    >
      <form onSubmit={submit} noValidate aria-label="Sign up">
        <Stack gap="md">
          {signup.error && <ErrorAlert error={signup.error} hideFields={['email', 'password']} />}
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
            description={
              minPassword ? `At least ${minPassword} characters; a passphrase is best.` : 'A passphrase is best.'
            }
            autoComplete="new-password"
            required
            {...form.getInputProps('password')}
          />
          <PasswordInput
            label="Confirm password"
            autoComplete="new-password"
            required
            {...form.getInputProps('confirm')}
          />
          <Button type="submit" loading={signup.isPending} fullWidth>
            Sign up
          </Button>
          <List size="xs" c="dimmed" spacing={2}>
            <List.Item>Research use only — results are not a diagnosis.</List.Item>
            <List.Item>Uploaded images are stored with your results until you delete them.</List.Item>
          </List>
          <Text size="sm" ta="center">
            Already registered?{' '}
            <Anchor component={Link} to="/login" state={state}>
              Log in
            </Anchor>
          </Text>
        </Stack>
      </form>
    </AuthLayout>
  );
}
