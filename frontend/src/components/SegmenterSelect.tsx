import { Select } from '@mantine/core';
import { useEffect } from 'react';
import type { ModelInfo } from '../client/types.gen';
import { formatCount } from '../lib/format';
import { headlineMetric } from '../lib/metrics';

/** The registry's default segmenter, or the first segmenter when none is flagged; null when none. */
export function defaultSegmenter(models: ModelInfo[]): string | null {
  const segmenters = models.filter((m) => m.task === 'segmentation');
  return (segmenters.find((m) => m.default) ?? segmenters[0])?.key ?? null;
}

/** One line per segmenter: name, default mark, measured Dice and cost per slice. */
export function segmenterOptions(models: ModelInfo[]): Array<{ value: string; label: string }> {
  return models
    .filter((m) => m.task === 'segmentation')
    .map((m) => {
      const metric = headlineMetric(m.task, m.metrics);
      const parts = [
        `${m.display_name}${m.default ? ' (default)' : ''}`,
        metric ? `${metric.label} ${metric.value.toFixed(3)}` : null,
        m.flops ? `${formatCount(m.flops)}FLOPs a slice` : null,
      ];
      return { value: m.key, label: parts.filter(Boolean).join(' · ') };
    });
}

interface SegmenterSelectProps {
  models: ModelInfo[] | undefined;
  value: string | null;
  onChange: (key: string) => void;
  disabled?: boolean;
  testId?: string;
}

/**
 * The segmentation model of a request, preselected to the registry's default once the registry
 * arrives. Shown only when there is a choice to make.
 */
export function SegmenterSelect({ models, value, onChange, disabled = false, testId = 'segmenter' }: SegmenterSelectProps) {
  useEffect(() => {
    if (models && value === null) {
      const key = defaultSegmenter(models);
      if (key) onChange(key);
    }
  }, [models, value, onChange]);
  const options = models ? segmenterOptions(models) : [];
  if (options.length < 2) return null;
  return (
    <Select
      label="Segmentation model"
      description="Outlines the vertebral bodies, names the levels and focuses the heatmaps. Each choice shows its Dice on the test split and its cost per slice; larger models take longer."
      data={options}
      value={value}
      onChange={(key) => key && onChange(key)}
      allowDeselect={false}
      disabled={disabled}
      data-testid={testId}
    />
  );
}
