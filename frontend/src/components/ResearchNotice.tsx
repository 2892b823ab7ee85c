import { Alert, Text } from '@mantine/core';
import { IconFlask } from '@tabler/icons-react';

export const RESEARCH_ONLY = 'Research use only — not a diagnosis';

interface ResearchNoticeProps {
  /** Where the training labels came from, e.g. the server's notice or a model's provenance. */
  detail?: string | null;
  compact?: boolean;
}

/** The notice every result and model page carries. */
export function ResearchNotice({ detail, compact = false }: ResearchNoticeProps) {
  return (
    <Alert
      color="yellow"
      variant="light"
      icon={<IconFlask size={20} aria-hidden />}
      title={RESEARCH_ONLY}
      data-testid="research-notice"
      p={compact ? 'xs' : undefined}
      // Yellow text on a pale background fails WCAG contrast; a deep orange keeps 4.5:1.
      styles={{ title: { color: 'var(--mantine-color-orange-9)' }, icon: { color: 'var(--mantine-color-orange-9)' } }}
    >
      {detail ? (
        <Text size="sm">{detail}</Text>
      ) : (
        <Text size="sm">
          spondyscan is a research tool. Its outputs are not validated for clinical decisions.
        </Text>
      )}
    </Alert>
  );
}
