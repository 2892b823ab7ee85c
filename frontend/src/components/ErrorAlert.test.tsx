import { screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { ApiError } from '../api/errors';
import { renderWithProviders } from '../test/render';
import { ErrorAlert, errorTitle } from './ErrorAlert';

describe('ErrorAlert', () => {
  it('titles errors by their code and shows the server sentence', () => {
    renderWithProviders(
      <ErrorAlert error={new ApiError(415, 'unsupported_format', 'Unsupported file: expected PNG, JPEG, …')} />,
    );
    const alert = screen.getByRole('alert');
    expect(alert).toHaveTextContent('Unsupported file');
    expect(alert).toHaveTextContent('Unsupported file: expected PNG, JPEG, …');
  });

  it('lists field errors except those shown beside their inputs', () => {
    const error = new ApiError(422, 'validation_error', 'Some fields are not valid.', {
      email: 'not an email',
      name: 'too long',
    });
    renderWithProviders(<ErrorAlert error={error} hideFields={['email']} />);
    expect(screen.getByText(/too long/)).toBeInTheDocument();
    expect(screen.queryByText(/not an email/)).not.toBeInTheDocument();
  });

  it('offers a retry', async () => {
    const onRetry = vi.fn();
    renderWithProviders(<ErrorAlert error={new Error('boom')} onRetry={onRetry} />);
    await userEvent.setup().click(screen.getByRole('button', { name: 'Try again' }));
    expect(onRetry).toHaveBeenCalledOnce();
  });

  it('falls back to status-based titles', () => {
    expect(errorTitle(new ApiError(500, 'http_500', 'x'))).toBe('Server error');
    expect(errorTitle(new ApiError(401, 'token_expired', 'x'))).toBe('Not logged in');
    expect(errorTitle('weird')).toBe('Something went wrong');
  });
});
