import type {
  AnalysisResult,
  ClassificationOutput,
  ClassifyResult,
  ExplainResult,
  ExplanationOutput,
  Faithfulness,
  LabelProvenance,
  SegmentationOutput,
  SegmentResult,
} from '../client/types.gen';
import { AsStatus, Stage } from '../client/types.gen';
import { formatPercent } from './format';

export type AnyResult = AnalysisResult | SegmentResult | ClassifyResult | ExplainResult;

export interface ResultParts {
  segmentation: SegmentationOutput | null;
  classifications: ClassificationOutput[];
  explanations: ExplanationOutput[];
}

/** One shape for every kind of stored result (full analysis, segment, classify, explain). */
export function resultParts(result: AnyResult): ResultParts {
  return {
    segmentation: 'segmentation' in result ? (result.segmentation ?? null) : null,
    classifications: 'classifications' in result ? result.classifications : [],
    explanations:
      'explanations' in result
        ? result.explanations
        : 'explanation' in result && result.explanation
          ? [result.explanation]
          : [],
  };
}

/** The explanation belonging to a classifier, preferring its AS-status (binary) head. */
export function explanationFor(
  explanations: ExplanationOutput[],
  modelKey: string,
): ExplanationOutput | null {
  const own = explanations.filter((e) => e.model.key === modelKey);
  return own.find((e) => e.head === 'binary') ?? own[0] ?? null;
}

/**
 * One plain sentence on the deletion test: do the pixels the heatmap highlights matter more
 * to the model than random pixels?
 */
export function faithfulnessSentence(faithfulness: Faithfulness | null | undefined): string {
  if (!faithfulness || !Number.isFinite(faithfulness.score)) {
    return 'No faithfulness test was run for this heatmap, so how well it reflects the model is unknown.';
  }
  // The server words its own reading of the score; keep the API and the app saying the same.
  if (faithfulness.interpretation) return faithfulness.interpretation;
  const score = faithfulness.score.toFixed(2);
  if (faithfulness.score >= 0.1) {
    return `Hiding the regions this heatmap highlights changes the model's answer much faster than hiding random regions (score ${score}), so the heatmap shows what the model relied on.`;
  }
  if (faithfulness.score > 0) {
    return `Hiding the highlighted regions changes the model's answer only a little faster than hiding random regions (score ${score}), so read this heatmap as a rough guide.`;
  }
  return `Hiding the highlighted regions changes the model's answer no faster than hiding random regions (score ${score}), so this heatmap may not show what the model relied on.`;
}

export function provenanceSentence(provenance: LabelProvenance | null | undefined): string {
  if (!provenance) return 'Label provenance unknown.';
  const source = provenance.label_source || 'unknown';
  const rule = provenance.rule_version ? ` (rule ${provenance.rule_version})` : '';
  const description = provenance.description ? ` — ${provenance.description.replace(/\.\s*$/, '')}` : '';
  return `Trained on labels from ${source}${rule}${description}.`;
}

export function statusColor(status: string | null | undefined): string {
  if (status === 'positive') return 'orange';
  if (status === 'negative') return 'teal';
  return 'gray';
}

/** Stages by severity and AS status negative first, as the API's schema lists them. */
export const STAGE_ORDER: string[] = Object.values(Stage);
export const STATUS_ORDER: string[] = Object.values(AsStatus);

/** Probabilities in a stable, meaningful order (stages by severity, status negative first). */
export function orderedProbabilities(
  probabilities: Record<string, number>,
  order: string[],
): Array<[string, number]> {
  const entries = Object.entries(probabilities);
  return entries.sort(([a], [b]) => {
    const ia = order.indexOf(a);
    const ib = order.indexOf(b);
    return (ia === -1 ? 99 : ia) - (ib === -1 ? 99 : ib);
  });
}

export function statusSummary(c: ClassificationOutput): string {
  return `${c.as_status} (${formatPercent(c.as_probability)})`;
}
