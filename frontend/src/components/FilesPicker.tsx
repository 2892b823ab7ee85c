import { Button, CloseButton, Group, List, Paper, Stack, Text } from '@mantine/core';
import { Dropzone } from '@mantine/dropzone';
import { IconFiles, IconFolderOpen, IconUpload, IconX } from '@tabler/icons-react';
import { useEffect, useRef, type ReactNode } from 'react';
import { formatBytes } from '../lib/format';
import { isJunkFile } from '../lib/studies';

/** The name a file was picked under: its path inside a chosen folder when there is one. */
export function pickedName(file: File): string {
  return (file as File & { webkitRelativePath?: string }).webkitRelativePath || file.name;
}

/** Files worth sending: hidden files and OS metadata a folder pick brings along are dropped. */
export function keepFiles(files: File[]): { kept: File[]; dropped: number } {
  const kept = files.filter((f) => !isJunkFile(pickedName(f)));
  return { kept, dropped: files.length - kept.length };
}

interface FilesPickerProps {
  onFiles: (files: File[], dropped: number) => void;
  title: string;
  hint: ReactNode;
  /** Offer a folder picker too (a DICOM series is usually a folder). */
  folder?: boolean;
  disabled?: boolean;
  testId: string;
}

/** Several files by drag-and-drop or browsing, and optionally a whole folder. */
export function FilesPicker({ onFiles, title, hint, folder = false, disabled = false, testId }: FilesPickerProps) {
  const folderRef = useRef<HTMLInputElement>(null);
  useEffect(() => {
    // Not a standard attribute (React has no prop for it), but every current browser reads it.
    folderRef.current?.setAttribute('webkitdirectory', '');
    folderRef.current?.setAttribute('directory', '');
  }, []);
  const take = (files: File[]) => {
    const { kept, dropped } = keepFiles(files);
    onFiles(kept, dropped);
  };
  return (
    <Stack gap="xs">
      <Dropzone
        onDrop={take}
        multiple
        disabled={disabled}
        aria-label={`${title}: drop files here or press Enter to browse`}
        inputProps={{ 'aria-label': title, 'data-testid': `${testId}-files` } as React.ComponentPropsWithoutRef<'input'>}
        radius="md"
        data-testid={`${testId}-dropzone`}
      >
        <Group justify="center" gap="lg" mih={120} style={{ pointerEvents: 'none' }} wrap="nowrap">
          <Dropzone.Accept>
            <IconUpload size={44} stroke={1.5} color="var(--mantine-color-clinical-7)" aria-hidden />
          </Dropzone.Accept>
          <Dropzone.Reject>
            <IconX size={44} stroke={1.5} color="var(--mantine-color-red-7)" aria-hidden />
          </Dropzone.Reject>
          <Dropzone.Idle>
            <IconFiles size={44} stroke={1.5} color="var(--mantine-color-gray-6)" aria-hidden />
          </Dropzone.Idle>
          <Stack gap={4}>
            <Text size="lg" fw={600}>
              {title}
            </Text>
            <Text size="sm" c="dimmed">
              {hint}
            </Text>
          </Stack>
        </Group>
      </Dropzone>
      {folder && (
        <Group gap="xs">
          <Button
            variant="default"
            leftSection={<IconFolderOpen size={16} aria-hidden />}
            onClick={() => folderRef.current?.click()}
            disabled={disabled}
          >
            Choose a folder…
          </Button>
          <Text size="xs" c="dimmed">
            Every file in the folder and its subfolders is sent; files of other series are set aside.
          </Text>
          <input
            ref={folderRef}
            type="file"
            multiple
            hidden
            tabIndex={-1}
            aria-hidden
            data-testid={`${testId}-folder`}
            onChange={(event) => {
              take(Array.from(event.currentTarget.files ?? []));
              event.currentTarget.value = '';
            }}
          />
        </Group>
      )}
    </Stack>
  );
}

interface ChosenFilesProps {
  files: File[];
  dropped: number;
  description: string;
  onClear: () => void;
  disabled?: boolean;
}

/** What was picked: how many files, how large, the first few names. */
export function ChosenFiles({ files, dropped, description, onClear, disabled = false }: ChosenFilesProps) {
  const bytes = files.reduce((sum, f) => sum + f.size, 0);
  const shown = files.slice(0, 5);
  return (
    <Paper withBorder p="md" data-testid="chosen-files">
      <Group justify="space-between" align="flex-start" wrap="nowrap">
        <Stack gap={2} miw={0}>
          <Text fw={600}>
            {files.length} file{files.length === 1 ? '' : 's'} · {formatBytes(bytes)}
          </Text>
          <Text size="sm" c="dimmed">
            {description}
            {dropped > 0 ? ` · ${dropped} hidden or system file${dropped === 1 ? '' : 's'} left out` : ''}
          </Text>
        </Stack>
        <CloseButton aria-label="Remove the chosen files" onClick={onClear} disabled={disabled} />
      </Group>
      <List size="xs" mt="xs" c="dimmed" spacing={0}>
        {shown.map((f, i) => (
          <List.Item key={`${pickedName(f)}-${i}`}>{pickedName(f)}</List.Item>
        ))}
        {files.length > shown.length && <List.Item>… and {files.length - shown.length} more</List.Item>}
      </List>
    </Paper>
  );
}
