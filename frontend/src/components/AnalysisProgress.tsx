import { Group, List, Paper, Progress, Text, ThemeIcon } from '@mantine/core';
import { IconLoader2 } from '@tabler/icons-react';
import { useEffect, useState } from 'react';

const STEPS = [
  'Upload and read the image',
  'Segment the lumbosacral region',
  'Classify AS status and stage with each chosen model',
  'Compute Grad-CAM heatmaps and their faithfulness',
];

/**
 * The API answers the whole pipeline in one response, so progress is shown as elapsed time
 * over the pipeline's steps rather than an invented percentage.
 */
export function AnalysisProgress({ models }: { models: number }) {
  const [started] = useState(() => Date.now());
  const [now, setNow] = useState(started);
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), 250);
    return () => window.clearInterval(timer);
  }, []);
  const seconds = Math.max(0, (now - started) / 1000);
  return (
    <Paper withBorder p="md" role="status" aria-live="polite" data-testid="analysis-progress">
      <Group justify="space-between" mb="xs">
        <Group gap="xs">
          <ThemeIcon variant="light" size="sm" radius="xl">
            <IconLoader2 size={14} aria-hidden className="spin" />
          </ThemeIcon>
          <Text fw={600}>
            Analysing with {models} model{models === 1 ? '' : 's'}…
          </Text>
        </Group>
        <Text size="sm" c="dimmed" aria-label={`${Math.floor(seconds)} seconds elapsed`}>
          {seconds.toFixed(0)} s
        </Text>
      </Group>
      <Progress value={100} animated striped aria-label="Analysis in progress" />
      <List size="sm" mt="sm" c="dimmed" spacing={2}>
        {STEPS.map((step) => (
          <List.Item key={step}>{step}</List.Item>
        ))}
      </List>
    </Paper>
  );
}
