import { Group, Stack, Text } from '@mantine/core';
import { Dropzone, type FileRejection } from '@mantine/dropzone';
import { IconPhotoScan, IconUpload, IconX } from '@tabler/icons-react';
import { formatBytes } from '../lib/format';
import { SUPPORTED_TEXT } from '../lib/fileFormat';

interface ImageDropzoneProps {
  onFile: (file: File) => void;
  onReject: (message: string) => void;
  /** The server's upload limit (GET /health/limits); unknown until it has answered. */
  maxBytes?: number;
  disabled?: boolean;
}

export function rejectionMessage(rejections: FileRejection[], maxBytes?: number): string {
  if (rejections.length > 1) return 'Drop one image at a time.';
  const codes = rejections.flatMap((r) => r.errors.map((e) => e.code));
  if (codes.includes('file-too-large') && maxBytes) {
    return `The file is larger than the ${formatBytes(maxBytes)} limit.`;
  }
  if (codes.includes('too-many-files')) return 'Drop one image at a time.';
  return 'This file cannot be used.';
}

/**
 * Drag-and-drop or click/Enter to browse. Any file type may be chosen: DICOM files often have
 * no extension, so the format is recognised from the content afterwards.
 */
export function ImageDropzone({ onFile, onReject, maxBytes, disabled = false }: ImageDropzoneProps) {
  return (
    <Dropzone
      onDrop={(files) => {
        const file = files[0];
        if (file) onFile(file);
      }}
      onReject={(rejections) => onReject(rejectionMessage(rejections, maxBytes))}
      maxSize={maxBytes}
      multiple={false}
      disabled={disabled}
      aria-label="Choose an image: drop a file here or press Enter to browse"
      inputProps={{ 'aria-label': 'Image file' }}
      data-testid="dropzone"
      radius="md"
    >
      <Group justify="center" gap="lg" mih={150} style={{ pointerEvents: 'none' }} wrap="nowrap">
        <Dropzone.Accept>
          <IconUpload size={48} stroke={1.5} color="var(--mantine-color-clinical-7)" aria-hidden />
        </Dropzone.Accept>
        <Dropzone.Reject>
          <IconX size={48} stroke={1.5} color="var(--mantine-color-red-7)" aria-hidden />
        </Dropzone.Reject>
        <Dropzone.Idle>
          <IconPhotoScan size={48} stroke={1.5} color="var(--mantine-color-gray-6)" aria-hidden />
        </Dropzone.Idle>
        <Stack gap={4}>
          <Text size="lg" fw={600}>
            Drop a spine MRI slice here, or click to browse
          </Text>
          <Text size="sm" c="dimmed">
            {SUPPORTED_TEXT}
            {maxBytes ? `; up to ${formatBytes(maxBytes)}` : ''}. The format is recognised from the
            file&apos;s content.
          </Text>
        </Stack>
      </Group>
    </Dropzone>
  );
}
