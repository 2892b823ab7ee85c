import { screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { useState } from 'react';
import { describe, expect, it, vi } from 'vitest';
import type { ModelInfo } from '../client/types.gen';
import { renderWithProviders } from '../test/render';
import { defaultSelection, ModelPicker, selectionError, toggleModel } from './ModelPicker';

function model(key: string, overrides: Partial<ModelInfo> = {}): ModelInfo {
  return {
    key,
    display_name: key.toUpperCase(),
    task: 'classification',
    version: '1.0.0',
    architecture: 'simple_cnn',
    parameters: 1_234_567,
    flops: 10_000_000,
    input_shape: [256, 256, 1],
    metrics: {},
    label_provenance: { label_source: 'feature_rule_v2' },
    default: false,
    ...overrides,
  };
}

const MODELS = [
  model('seg', { task: 'segmentation', default: true, metrics: { dice: 0.9 } }),
  model('cnn', { default: true, metrics: { test: { binary: { accuracy: 0.875 } } } }),
  model('hybrid', { metrics: { accuracy: 0.91 } }),
  model('vit'),
];

describe('model selection logic', () => {
  it('preselects the default classifiers only', () => {
    expect(defaultSelection(MODELS)).toEqual(['cnn']);
  });

  it('falls back to the first classifier when none is a default', () => {
    expect(defaultSelection(MODELS.map((m) => ({ ...m, default: false })))).toEqual(['cnn']);
    expect(defaultSelection([MODELS[0]!])).toEqual([]);
  });

  it('toggles keys in registry order and respects the maximum', () => {
    expect(toggleModel(MODELS, ['vit'], 'cnn')).toEqual(['cnn', 'vit']);
    expect(toggleModel(MODELS, ['cnn', 'vit'], 'cnn')).toEqual(['vit']);
    expect(toggleModel(MODELS, ['cnn', 'vit'], 'hybrid', 2)).toEqual(['cnn', 'vit']);
  });

  it('explains an empty or oversized selection', () => {
    expect(selectionError([], 8)).toBe('Choose at least one model.');
    expect(selectionError(['a', 'b', 'c'], 2)).toBe('Choose at most 2 models.');
    expect(selectionError(['a'], 2)).toBeNull();
  });
});

function Harness({ onChange }: { onChange?: (keys: string[]) => void }) {
  const [value, setValue] = useState(() => defaultSelection(MODELS));
  return (
    <ModelPicker
      models={MODELS}
      value={value}
      onChange={(keys) => {
        setValue(keys);
        onChange?.(keys);
      }}
    />
  );
}

describe('ModelPicker', () => {
  it('lists classifiers with their measured accuracy and the default preselected', () => {
    renderWithProviders(<Harness />);
    expect(screen.queryByText('SEG')).not.toBeInTheDocument();
    const cnn = screen.getByRole('checkbox', { name: /CNN, accuracy 88%/ });
    expect(cnn).toHaveAttribute('aria-checked', 'true');
    expect(screen.getByRole('checkbox', { name: /HYBRID, accuracy 91%/ })).toHaveAttribute('aria-checked', 'false');
    expect(screen.getByText('87.5%')).toBeInTheDocument();
    expect(screen.getByText('No measured accuracy in its bundle')).toBeInTheDocument();
  });

  it('selects several models for comparison, by mouse and keyboard', async () => {
    const user = userEvent.setup();
    const onChange = vi.fn();
    renderWithProviders(<Harness onChange={onChange} />);
    await user.click(screen.getByRole('checkbox', { name: /HYBRID/ }));
    expect(onChange).toHaveBeenLastCalledWith(['cnn', 'hybrid']);
    screen.getByRole('checkbox', { name: /VIT/ }).focus();
    await user.keyboard(' ');
    expect(onChange).toHaveBeenLastCalledWith(['cnn', 'hybrid', 'vit']);
    expect(screen.getByText(/3 of 3 selected/)).toBeInTheDocument();
  });

  it('shows an error when every model is deselected', async () => {
    const user = userEvent.setup();
    renderWithProviders(<Harness />);
    await user.click(screen.getByRole('checkbox', { name: /CNN/ }));
    expect(screen.getByRole('alert')).toHaveTextContent('Choose at least one model.');
  });
});
