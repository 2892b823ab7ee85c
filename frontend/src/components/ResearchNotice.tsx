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
      // Yellow or orange text on the pale yellow background fails WCAG contrast; a dark brown
      // title keeps well above 4.5:1 while the icon carries the colour.
      styles={{ title: { color: '#6b2c00' }, icon: { color: 'var(--mantine-color-orange-9)' } }}
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
