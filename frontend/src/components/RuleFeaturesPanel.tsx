import { Badge, Group, SimpleGrid, Stack, Table, Text, Title } from '@mantine/core';
import { useId } from 'react';
import type { CutPoint, FeatureExplanation, RuleFeature } from '../client/types.gen';
import { formatPercent } from '../lib/format';
import { AuthImage } from './AuthImage';

interface RuleFeaturesPanelProps {
  features: FeatureExplanation;
  modelName: string;
}

function number(value: number, digits = 3): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '—';
}

/** A measurement in its unit: grey levels with one decimal, shares as percentages. */
function measured(value: number, unit: string): string {
  return unit.startsWith('share') ? formatPercent(value, 1) : `${number(value, 1)} ${unit}s`;
}

function featureValue(f: RuleFeature, units: Record<string, string>, labels: Record<string, string>): string {
  const parts = Object.entries(f.components);
  if (parts.length === 1 && parts[0][1] === 1) return measured(f.value, units[parts[0][0]] ?? '');
  const mix = parts.map(([name, w]) => `${w} × ${labels[name] ?? name}`).join(' + ');
  return `${number(f.value, 1)} (${mix})`;
}

function CutPoints({ cuts, label }: { cuts: CutPoint[]; label: string }) {
  return (
    <Group gap={6} role="list" aria-label={label}>
      {cuts.map((c) => (
        <Badge
          key={c.name}
          role="listitem"
          variant={c.crossed ? 'filled' : 'outline'}
          color={c.crossed ? 'orange' : 'gray'}
          tt="none"
          aria-label={`${c.name} at ${number(c.value, 2)}: ${c.crossed ? 'crossed' : 'not crossed'}`}
        >
          {c.name} &gt; {number(c.value, 2)} {c.crossed ? '· crossed' : '· not crossed'}
        </Badge>
      ))}
    </Group>
  );
}

/**
 * A rule-feature model in the terms of the labelling rule it learnt: the rule's features with
 * their weights and contributions to its severity score, the cut points crossed, the rule's
 * answer beside the model's own, and the pixel map behind each measurement.
 */
export function RuleFeaturesPanel({ features: f, modelName }: RuleFeaturesPanelProps) {
  const titleId = useId();
  const units = Object.fromEntries(f.measurements.map((m) => [m.name, m.unit]));
  const labels = Object.fromEntries(f.measurements.map((m) => [m.name, m.label.toLowerCase()]));
  const group = f.group === '*' ? 'all training slices' : `training slices from ${f.group}`;
  return (
    <Stack gap="xs" component="section" aria-labelledby={titleId} data-testid="rule-features">
      <Title order={4} size="h6" id={titleId}>
        In the labelling rule&apos;s terms
      </Title>
      <Text size="xs" data-testid="rule-features-note">
        {f.note}
      </Text>
      <Table.ScrollContainer minWidth={420}>
        <Table verticalSpacing={2} fz="xs" data-testid="rule-features-table">
          <Table.Caption>
            Rule {f.rule_version}: each feature ranked among {group} (percentile), times its weight; the
            contributions add up to the rule&apos;s severity score.
          </Table.Caption>
          <Table.Thead>
            <Table.Tr>
              <Table.Th scope="col">Feature</Table.Th>
              <Table.Th scope="col">Value</Table.Th>
              <Table.Th scope="col">Percentile</Table.Th>
              <Table.Th scope="col">Weight</Table.Th>
              <Table.Th scope="col">Contribution</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {f.features.map((row) => (
              <Table.Tr key={row.name}>
                <Table.Th scope="row" fw={500}>
                  {row.label}
                </Table.Th>
                <Table.Td>{featureValue(row, units, labels)}</Table.Td>
                <Table.Td>{formatPercent(row.percentile, 0)}</Table.Td>
                <Table.Td>{number(row.weight, 2)}</Table.Td>
                <Table.Td>{number(row.contribution)}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
          <Table.Tfoot>
            <Table.Tr>
              <Table.Th scope="row" colSpan={4}>
                Rule&apos;s severity score
              </Table.Th>
              <Table.Td fw={700} data-testid="rule-score">
                {number(f.score)}
              </Table.Td>
            </Table.Tr>
          </Table.Tfoot>
        </Table>
      </Table.ScrollContainer>
      <Text size="xs" fw={600}>
        The rule gives {f.as_status}, {f.stage}
      </Text>
      <CutPoints cuts={f.cut_points} label="The rule's cut points on its severity score" />
      <Group gap="xs">
        <Text size="xs" fw={600}>
          {modelName} predicts {f.model.as_status}, {f.model.stage} (its own severity score{' '}
          {number(f.model.score, 2)})
        </Text>
        <Badge size="sm" variant="light" color={f.agrees ? 'teal' : 'orange'} data-testid="rule-agreement">
          {f.agrees ? 'agrees with the rule' : 'differs from the rule'}
        </Badge>
      </Group>
      <CutPoints cuts={f.model.cut_points} label={`${modelName}'s learnt cut points on its own severity score`} />
      <SimpleGrid cols={{ base: 2, sm: 4 }} spacing="xs" role="list" aria-label="Pixel maps behind the rule's measurements">
        {f.measurements.map((m) => (
          <figure key={m.name} role="listitem" style={{ margin: 0 }}>
            <AuthImage url={m.map_url} alt={`${m.label} map: ${m.note}`} height={112} width="100%" />
            <Text component="figcaption" size="xs" ta="center">
              {m.label}: {measured(m.value, m.unit)}
            </Text>
          </figure>
        ))}
      </SimpleGrid>
    </Stack>
  );
}
