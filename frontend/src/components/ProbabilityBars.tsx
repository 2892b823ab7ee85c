import { Group, Progress, Stack, Text } from '@mantine/core';
import { formatPercent } from '../lib/format';

interface ProbabilityBarsProps {
  /** Label -> probability, already in display order. */
  items: Array<[string, number]>;
  highlight?: string;
  color?: string;
  label: string;
}

/** Probabilities as labelled horizontal bars; the predicted class is emphasised. */
export function ProbabilityBars({ items, highlight, color = 'clinical', label }: ProbabilityBarsProps) {
  return (
    <Stack gap={6} role="list" aria-label={label}>
      {items.map(([name, p]) => {
        const active = name === highlight;
        return (
          <div key={name} role="listitem" aria-label={`${name}: ${formatPercent(p, 1)}`}>
            <Group justify="space-between" gap="xs" mb={2}>
              <Text size="xs" fw={active ? 700 : 400} tt="capitalize">
                {name}
              </Text>
              <Text size="xs" fw={active ? 700 : 400} c={active ? undefined : 'dimmed'}>
                {formatPercent(p, 1)}
              </Text>
            </Group>
            <Progress
              value={Math.max(0, Math.min(100, p * 100))}
              color={active ? color : 'gray.5'}
              size="sm"
              aria-hidden
            />
          </div>
        );
      })}
    </Stack>
  );
}
