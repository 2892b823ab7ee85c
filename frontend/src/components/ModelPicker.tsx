import { Badge, Checkbox, Group, SimpleGrid, Stack, Text } from '@mantine/core';
import type { ModelInfo } from '../client/types.gen';
import { formatCount, formatPercent } from '../lib/format';
import { headlineMetric } from '../lib/metrics';
import classes from './ModelPicker.module.css';

/** The registry's defaults for classification, or the first classifier when none is flagged. */
export function defaultSelection(models: ModelInfo[]): string[] {
  const classifiers = models.filter((m) => m.task === 'classification');
  const defaults = classifiers.filter((m) => m.default).map((m) => m.key);
  if (defaults.length > 0) return defaults;
  return classifiers.length > 0 ? [(classifiers[0] as ModelInfo).key] : [];
}

/** Toggle a key, keeping the registry order and refusing to go past `max`. */
export function toggleModel(
  models: ModelInfo[],
  selected: string[],
  key: string,
  max = Number.POSITIVE_INFINITY,
): string[] {
  const next = selected.includes(key)
    ? selected.filter((k) => k !== key)
    : selected.length >= max
      ? selected
      : [...selected, key];
  const order = models.map((m) => m.key);
  return [...next].sort((a, b) => order.indexOf(a) - order.indexOf(b));
}

export function selectionError(selected: string[], max = Number.POSITIVE_INFINITY): string | null {
  if (selected.length === 0) return 'Choose at least one model.';
  if (selected.length > max) return `Choose at most ${max} models.`;
  return null;
}

interface ModelPickerProps {
  models: ModelInfo[];
  value: string[];
  onChange: (keys: string[]) => void;
  max?: number;
  disabled?: boolean;
}

/** Classifier selection as cards: name, version, size and measured accuracy. */
export function ModelPicker({
  models,
  value,
  onChange,
  max = Number.POSITIVE_INFINITY,
  disabled = false,
}: ModelPickerProps) {
  const classifiers = models.filter((m) => m.task === 'classification');
  const error = selectionError(value, max);
  return (
    <Stack gap="xs">
      <SimpleGrid cols={{ base: 1, sm: 2, md: 1 }} spacing="sm" role="group" aria-label="Classification models">
        {classifiers.map((model) => {
          const metric = headlineMetric(model.task, model.metrics);
          const checked = value.includes(model.key);
          return (
            <Checkbox.Card
              key={model.key}
              className={classes.card}
              radius="md"
              checked={checked}
              disabled={disabled || (!checked && value.length >= max)}
              onClick={() => onChange(toggleModel(models, value, model.key, max))}
              aria-label={`${model.display_name}${metric ? `, ${metric.label.toLowerCase()} ${formatPercent(metric.value)}` : ''}`}
              data-testid={`model-${model.key}`}
            >
              <Group wrap="nowrap" align="flex-start" gap="sm">
                <Checkbox.Indicator mt={2} />
                <Stack gap={4} flex={1} miw={0}>
                  <Group gap={6} justify="space-between" wrap="nowrap" align="flex-start">
                    <Text fw={600} size="sm">
                      {model.display_name}
                    </Text>
                    {model.default && (
                      <Badge size="xs" variant="light">
                        default
                      </Badge>
                    )}
                  </Group>
                  <Text size="xs" c="dimmed">
                    v{model.version} · {model.architecture} · {formatCount(model.parameters)} params
                  </Text>
                  <Text size="xs">
                    {metric ? (
                      <>
                        Measured {metric.label.toLowerCase()}:{' '}
                        <Text span fw={700} size="xs">
                          {formatPercent(metric.value, 1)}
                        </Text>
                      </>
                    ) : (
                      <Text span c="dimmed" size="xs">
                        No measured accuracy in its bundle
                      </Text>
                    )}
                  </Text>
                </Stack>
              </Group>
            </Checkbox.Card>
          );
        })}
      </SimpleGrid>
      <Text size="xs" c={error ? 'red.8' : 'dimmed'} role={error ? 'alert' : undefined}>
        {error ?? `${value.length} of ${classifiers.length} selected; results are shown side by side.`}
      </Text>
    </Stack>
  );
}
