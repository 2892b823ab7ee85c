import { Table, Text } from '@mantine/core';
import type { ClassificationOutput, ExplanationOutput } from '../client/types.gen';
import { formatPercent } from '../lib/format';
import { explanationFor, statusColor } from '../lib/results';

interface ComparisonTableProps {
  classifications: ClassificationOutput[];
  explanations: ExplanationOutput[];
}

/** The chosen models side by side in one table, for a quick read of agreement. */
export function ComparisonTable({ classifications, explanations }: ComparisonTableProps) {
  const agree =
    classifications.length > 1 &&
    classifications.every((c) => c.as_status === classifications[0]?.as_status) &&
    classifications.every((c) => c.stage === classifications[0]?.stage);
  return (
    <>
      <Table.ScrollContainer minWidth={560}>
        <Table striped highlightOnHover verticalSpacing="xs" data-testid="comparison-table">
          <Table.Caption>
            {classifications.length > 1
              ? agree
                ? 'The models agree on AS status and stage.'
                : 'The models disagree; compare their heatmaps and probabilities.'
              : 'One model was used.'}
          </Table.Caption>
          <Table.Thead>
            <Table.Tr>
              <Table.Th scope="col">Model</Table.Th>
              <Table.Th scope="col">Version</Table.Th>
              <Table.Th scope="col">AS status</Table.Th>
              <Table.Th scope="col">P(status)</Table.Th>
              <Table.Th scope="col">Stage</Table.Th>
              <Table.Th scope="col">P(stage)</Table.Th>
              <Table.Th scope="col">Faithfulness</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {classifications.map((c) => {
              const e = explanationFor(explanations, c.model.key);
              return (
                <Table.Tr key={c.model.key}>
                  <Table.Th scope="row">
                    <Text size="sm" fw={600}>
                      {c.model.display_name}
                    </Text>
                  </Table.Th>
                  <Table.Td>{c.model.version}</Table.Td>
                  <Table.Td>
                    <Text size="sm" fw={700} c={`${statusColor(c.as_status)}.9`} tt="capitalize">
                      {c.as_status}
                    </Text>
                  </Table.Td>
                  <Table.Td>{formatPercent(c.as_probability, 1)}</Table.Td>
                  <Table.Td>{c.stage}</Table.Td>
                  <Table.Td>{formatPercent(c.stage_probability, 1)}</Table.Td>
                  <Table.Td>{e?.faithfulness ? e.faithfulness.score.toFixed(2) : '—'}</Table.Td>
                </Table.Tr>
              );
            })}
          </Table.Tbody>
        </Table>
      </Table.ScrollContainer>
    </>
  );
}
