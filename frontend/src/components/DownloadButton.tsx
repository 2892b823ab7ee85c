import { Button, type ButtonProps } from '@mantine/core';
import { notifications } from '@mantine/notifications';
import { IconDownload } from '@tabler/icons-react';
import { useState, type ReactNode } from 'react';
import { fetchArtifact, saveBlob } from '../api/artifacts';
import { errorMessage } from '../api/errors';

interface DownloadButtonProps extends Omit<ButtonProps, 'children' | 'onClick'> {
  url: string;
  filename: string;
  children: ReactNode;
  /** Ask the server again instead of the browser cache (files that change while a job runs). */
  fresh?: boolean;
  accept?: string;
  'data-testid'?: string;
}

/** A private file, fetched with the session's credentials at click time and saved under a name. */
export function DownloadButton({ url, filename, children, fresh = false, accept, ...rest }: DownloadButtonProps) {
  const [busy, setBusy] = useState(false);
  const download = async () => {
    setBusy(true);
    try {
      saveBlob(await fetchArtifact(url, { fresh, accept }), filename);
    } catch (error) {
      notifications.show({ color: 'red', title: 'Download failed', message: errorMessage(error) });
    } finally {
      setBusy(false);
    }
  };
  return (
    <Button
      variant="default"
      leftSection={<IconDownload size={16} aria-hidden />}
      loading={busy}
      onClick={() => void download()}
      {...rest}
    >
      {children}
    </Button>
  );
}
