import { screen, within } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import type { ClassificationOutput, ExplanationOutput, FeatureExplanation } from '../client/types.gen';
import { PROVENANCE } from '../test/fixtures';
import { renderWithProviders } from '../test/render';
import { ModelResultCard } from './ModelResultCard';
import { RuleFeaturesPanel } from './RuleFeaturesPanel';

vi.mock('../api/artifacts', () => ({
  useArtifactUrl: (url: string | null | undefined) => ({ url: url ? `blob:${url}` : null, isLoading: false, isError: false, error: null }),
}));

const cuts = (values: number[], score: number) =>
  ['AS positive', 'Early', 'Moderate', 'Advanced'].map((name, i) => ({ name, value: values[i], crossed: score > values[i] }));

function features(overrides: Partial<FeatureExplanation> = {}): FeatureExplanation {
  return {
    rule_version: 'v2',
    group: 'myosegmentum',
    features: [
      { name: 'brightness', label: 'Brightness', value: 62.04, percentile: 0.9, weight: 0.3, contribution: 0.27, components: { mean: 0.4, lower_mean: 0.6 } },
      { name: 'texture', label: 'Texture', value: 50.45, percentile: 0.5, weight: 0.4, contribution: 0.2, components: { std: 1 } },
      { name: 'edge_density', label: 'Edge density', value: 0.09, percentile: 0.6, weight: 0.3, contribution: 0.18, components: { edge_density: 1 } },
    ],
    measurements: [
      { name: 'mean', label: 'Brightness (whole slice)', value: 62.2, unit: 'grey level', map_url: '/artifacts/a/feat-mean.png', note: 'the 8-bit slice' },
      { name: 'lower_mean', label: 'Brightness (lower half)', value: 61.9, unit: 'grey level', map_url: '/artifacts/a/feat-lower.png', note: 'the lower half' },
      { name: 'std', label: 'Texture (grey-level spread)', value: 50.45, unit: 'grey level', map_url: '/artifacts/a/feat-spread.png', note: 'squared distance from the mean' },
      { name: 'edge_density', label: 'Edge density', value: 0.09, unit: 'share of pixels', map_url: '/artifacts/a/feat-edges.png', note: 'the Canny edge map' },
    ],
    score: 0.65,
    cut_points: cuts([0.55, 0.6, 0.67, 0.77], 0.65),
    as_status: 'positive',
    stage: 'Early',
    model: { score: 5.19, cut_points: cuts([0.12, 2.45, 5.43, 8.86], 5.19), as_status: 'positive', stage: 'Early', sources: { myosegmentum: 0.99 } },
    agrees: true,
    note: 'The rule (not the model) scores this slice 0.65.',
    ...overrides,
  };
}

describe('RuleFeaturesPanel', () => {
  it('tabulates each feature with its value, weight and contribution, and the score', () => {
    renderWithProviders(<RuleFeaturesPanel features={features()} modelName="Ordinal CNN" />);
    const section = screen.getByRole('region', { name: "In the labelling rule's terms" });
    const table = within(section).getByRole('table');
    expect(table).toHaveAccessibleName(/ranked among training slices from myosegmentum/);
    const rows = within(table).getAllByRole('row');
    expect(rows.map((r) => r.textContent)).toEqual([
      'FeatureValuePercentileWeightContribution',
      'Brightness62.0 (0.4 × brightness (whole slice) + 0.6 × brightness (lower half))90%0.300.270',
      'Texture50.5 grey levels50%0.400.200',
      'Edge density9.0%60%0.300.180',
      "Rule's severity score0.650",
    ]);
    expect(screen.getByText('The rule gives positive, Early')).toBeInTheDocument();
  });

  it('says which cut points each score crossed, in words, for the rule and the model', () => {
    renderWithProviders(<RuleFeaturesPanel features={features()} modelName="Ordinal CNN" />);
    const rule = screen.getByRole('list', { name: "The rule's cut points on its severity score" });
    expect(within(rule).getAllByRole('listitem').map((b) => b.getAttribute('aria-label'))).toEqual([
      'AS positive at 0.55: crossed',
      'Early at 0.60: crossed',
      'Moderate at 0.67: not crossed',
      'Advanced at 0.77: not crossed',
    ]);
    const model = screen.getByRole('list', { name: "Ordinal CNN's learnt cut points on its own severity score" });
    expect(within(model).getAllByRole('listitem').filter((b) => b.getAttribute('aria-label')?.endsWith(': crossed'))).toHaveLength(2);
    expect(screen.getByTestId('rule-agreement')).toHaveTextContent('agrees with the rule');
  });

  it('shows each pixel map as a labelled image', () => {
    renderWithProviders(<RuleFeaturesPanel features={features()} modelName="Ordinal CNN" />);
    const maps = screen.getByRole('list', { name: "Pixel maps behind the rule's measurements" });
    const images = within(maps).getAllByRole('img');
    expect(images.map((i) => i.getAttribute('src'))).toEqual([
      'blob:/artifacts/a/feat-mean.png',
      'blob:/artifacts/a/feat-lower.png',
      'blob:/artifacts/a/feat-spread.png',
      'blob:/artifacts/a/feat-edges.png',
    ]);
    expect(within(maps).getByAltText('Edge density map: the Canny edge map')).toBeInTheDocument();
    expect(within(maps).getByText('Edge density: 9.0%')).toBeInTheDocument();
  });

  it('says when the model differs from the rule', () => {
    const model = { ...features().model, stage: 'Moderate' as const };
    renderWithProviders(<RuleFeaturesPanel features={features({ model, agrees: false, group: '*' })} modelName="Ordinal CNN" />);
    expect(screen.getByTestId('rule-agreement')).toHaveTextContent('differs from the rule');
    expect(screen.getByText(/Ordinal CNN predicts positive, Moderate/)).toBeInTheDocument();
    expect(screen.getByRole('table')).toHaveAccessibleName(/ranked among all training slices/);
  });
});

describe('ModelResultCard', () => {
  const model = { key: 'ordinal_cnn', display_name: 'Ordinal CNN', version: '1.0.0', architecture: 'ordinal_cnn' };
  const classification: ClassificationOutput = {
    model,
    as_status: 'positive',
    as_probability: 0.8,
    as_probabilities: { negative: 0.2, positive: 0.8 },
    stage: 'Early',
    stage_index: 1,
    stage_probability: 0.6,
    stage_probabilities: { Normal: 0.2, Early: 0.6, Moderate: 0.15, Advanced: 0.05 },
    label_provenance: PROVENANCE,
  };
  const explanation = (extra: Partial<ExplanationOutput>): ExplanationOutput => ({
    model,
    head: 'binary',
    method: 'gradcam',
    focus: 'segmentation',
    class_index: 1,
    class_label: 'positive',
    probability: 0.8,
    heatmap_url: '/artifacts/a/heatmap.png',
    overlay_url: '/artifacts/a/gradcam.png',
    label_provenance: PROVENANCE,
    ...extra,
  });

  it("shows a rule-feature model's breakdown with its explanation, and nothing for other models", () => {
    const { unmount } = renderWithProviders(
      <ModelResultCard classification={classification} explanation={explanation({ features: features() })} />,
    );
    const card = screen.getByRole('article', { name: 'Result of Ordinal CNN' });
    expect(within(card).getByTestId('rule-features')).toBeInTheDocument();
    expect(within(card).getByTestId('rule-score')).toHaveTextContent('0.650');
    unmount();
    renderWithProviders(<ModelResultCard classification={classification} explanation={explanation({ features: null })} />);
    expect(screen.queryByTestId('rule-features')).not.toBeInTheDocument();
  });
});
