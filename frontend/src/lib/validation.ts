const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;
export const MIN_PASSWORD = 8;

export function validateEmail(value: string): string | null {
  if (!value.trim()) return 'Enter your email address.';
  return EMAIL.test(value.trim()) ? null : 'Enter a valid email address, like name@example.org.';
}

export function validateNewPassword(value: string): string | null {
  if (!value) return 'Choose a password.';
  if (value.length < MIN_PASSWORD) return `Use at least ${MIN_PASSWORD} characters.`;
  return null;
}
