import { Badge, Divider, Group, Paper, Stack, Text, Title } from '@mantine/core';
import type { ClassificationOutput, ExplanationOutput } from '../client/types.gen';
import { formatPercent } from '../lib/format';
import {
  faithfulnessSentence,
  orderedProbabilities,
  provenanceSentence,
  STAGE_ORDER,
  STATUS_ORDER,
  statusColor,
} from '../lib/results';
import { ProbabilityBars } from './ProbabilityBars';
import { RuleFeaturesPanel } from './RuleFeaturesPanel';

interface ModelResultCardProps {
  classification: ClassificationOutput;
  explanation: ExplanationOutput | null;
}

/** One classifier's answer: AS status and stage with their probabilities, and its heatmap's faithfulness. */
export function ModelResultCard({ classification: c, explanation }: ModelResultCardProps) {
  const statuses = orderedProbabilities(c.as_probabilities, STATUS_ORDER);
  const stages = orderedProbabilities(c.stage_probabilities, STAGE_ORDER);
  return (
    <Paper withBorder p="md" component="article" aria-label={`Result of ${c.model.display_name}`} data-testid={`model-result-${c.model.key}`}>
      <Stack gap="sm">
        <div>
          <Title order={3} size="h5">
            {c.model.display_name}
          </Title>
          <Text size="xs" c="dimmed">
            {c.model.key} · version {c.model.version} · {c.model.architecture}
          </Text>
        </div>
        <Group gap="xs">
          <Badge size="lg" color={statusColor(c.as_status)} variant="light" data-testid="as-status">
            AS {c.as_status}
          </Badge>
          <Badge size="lg" color="clinical" variant="outline" data-testid="stage">
            Stage: {c.stage}
          </Badge>
        </Group>
        <Text size="sm">
          AS status <strong>{c.as_status}</strong> with probability {formatPercent(c.as_probability, 1)};
          stage <strong>{c.stage}</strong> with probability {formatPercent(c.stage_probability, 1)}.
        </Text>
        <Divider label="AS status" labelPosition="left" />
        <ProbabilityBars
          items={statuses}
          highlight={c.as_status}
          color={statusColor(c.as_status)}
          label={`AS status probabilities from ${c.model.display_name}`}
        />
        <Divider label="Stage" labelPosition="left" />
        <ProbabilityBars
          items={stages}
          highlight={c.stage}
          label={`Stage probabilities from ${c.model.display_name}`}
        />
        <Divider label="Explanation" labelPosition="left" />
        {explanation ? (
          <Text size="sm" data-testid="faithfulness">
            {faithfulnessSentence(explanation.faithfulness)}
          </Text>
        ) : (
          <Text size="sm" c="dimmed">
            No heatmap was computed for this model.
          </Text>
        )}
        {explanation?.inside_fraction != null && (
          <Text size="xs" c="dimmed">
            {formatPercent(explanation.inside_fraction)} of the heatmap lies inside the segmented
            region ({explanation.method}, {explanation.head} head, explaining “{explanation.class_label}”).
          </Text>
        )}
        {explanation?.focus_note && (
          <Text size="xs" c="dimmed">
            {explanation.focus_note}
          </Text>
        )}
        {explanation?.method_note && (
          <Text size="xs" c="orange.9" data-testid="method-note">
            {explanation.method_note}
          </Text>
        )}
        {explanation?.features && (
          <RuleFeaturesPanel features={explanation.features} modelName={c.model.display_name} />
        )}
        <Text size="xs" c="dimmed">
          {provenanceSentence(c.label_provenance)}
        </Text>
      </Stack>
    </Paper>
  );
}
