const EMAIL = /^[^@\s]+@[^@\s]+\.[^@\s]+$/;

export function validateEmail(value: string): string | null {
  if (!value.trim()) return 'Enter your email address.';
  return EMAIL.test(value.trim()) ? null : 'Enter a valid email address, like name@example.org.';
}

/** `minLength` comes from the server's limits; until they arrive the server's own check stands. */
export function validateNewPassword(value: string, minLength?: number): string | null {
  if (!value) return 'Choose a password.';
  if (minLength && value.length < minLength) return `Use at least ${minLength} characters.`;
  return null;
}
