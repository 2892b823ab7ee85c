import { Badge, Group, Progress, Stack, Text } from '@mantine/core';
import { IconLoader2 } from '@tabler/icons-react';
import type { JobProgress, StudyProgress } from '../client/types.gen';
import { phaseLabel, runStatusColor, STATUS_LABELS } from '../lib/studies';

/** Status of a study, a job or one of its items, in words and colour. */
export function RunStatusBadge({ status, size = 'md' }: { status: string; size?: 'sm' | 'md' | 'lg' }) {
  const running = status === 'running';
  return (
    <Badge
      color={runStatusColor(status)}
      variant="light"
      size={size}
      leftSection={running ? <IconLoader2 size={12} className="spin" aria-hidden /> : undefined}
      data-testid="run-status"
      data-status={status}
    >
      {STATUS_LABELS[status] ?? status}
    </Badge>
  );
}

/** "2 of 3 finished: 1 done, 1 failed" */
export function jobProgressText(p: JobProgress): string {
  const parts = [`${p.done} done`];
  if (p.failed) parts.push(`${p.failed} failed`);
  if (p.cancelled) parts.push(`${p.cancelled} cancelled`);
  return `${p.finished} of ${p.total} finished: ${parts.join(', ')}`;
}

/**
 * A job's items as one bar: done, failed and cancelled shares side by side, exposed as one
 * progress bar whose value is the finished share.
 */
export function JobProgressBar({ progress, label = 'Job progress' }: { progress: JobProgress; label?: string }) {
  const total = Math.max(progress.total, 1);
  const share = (n: number | undefined) => ((n ?? 0) / total) * 100;
  const percent = Math.round(progress.percent ?? share(progress.finished));
  return (
    <Stack gap={2} miw={160} data-testid="job-progress" data-percent={percent}>
      <Progress.Root
        size="md"
        role="progressbar"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={percent}
        aria-valuetext={`${percent}%: ${jobProgressText(progress)}`}
      >
        <Progress.Section value={share(progress.done)} color="teal" withAria={false} />
        <Progress.Section value={share(progress.failed)} color="red" withAria={false} />
        <Progress.Section value={share(progress.cancelled)} color="gray" withAria={false} />
      </Progress.Root>
      <Text size="xs" c="dimmed">
        {percent}% · {jobProgressText(progress)}
      </Text>
    </Stack>
  );
}

/** A study's progress: the phase in words and slices done of the series. */
export function StudyProgressBar({
  progress,
  status,
  compact = false,
}: {
  progress: StudyProgress;
  status: string;
  compact?: boolean;
}) {
  const percent = Math.round(progress.percent ?? 0);
  const slices =
    progress.slices_total > 0 ? `${progress.slices_done} of ${progress.slices_total} slices` : 'counting slices';
  const phase = status === 'queued' ? 'Queued' : phaseLabel(progress.phase);
  return (
    <Stack gap={4} miw={compact ? 140 : undefined} data-testid="study-progress" data-percent={percent}>
      {!compact && (
        <Group justify="space-between" gap="xs">
          <Text size="sm" fw={600} data-testid="study-phase">
            {phase}
          </Text>
          <Text size="sm" c="dimmed">
            {slices} · {percent}%
          </Text>
        </Group>
      )}
      <Progress
        value={percent}
        size={compact ? 'sm' : 'lg'}
        animated={status === 'running'}
        striped={status === 'running'}
        aria-label={`Study progress: ${phase}, ${slices}`}
      />
      {compact && (
        <Text size="xs" c="dimmed">
          {percent}% · {slices}
        </Text>
      )}
    </Stack>
  );
}
