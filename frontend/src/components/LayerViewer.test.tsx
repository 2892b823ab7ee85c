import { fireEvent, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { renderWithProviders } from '../test/render';
import { initialVisible, layerAvailable, LayerViewer, toggleLayer, type LayerDef } from './LayerViewer';

const LAYERS: LayerDef[] = [
  { id: 'contour', label: 'Segmentation contour', kind: 'contour', src: 'blob:mask' },
  { id: 'mask', label: 'Segmentation mask', kind: 'mask', src: 'blob:mask' },
  { id: 'gradcam', label: 'Grad-CAM heatmap', kind: 'heatmap', src: 'blob:heat' },
  { id: 'focused', label: 'Focused heatmap', kind: 'overlay', src: 'blob:focused' },
  { id: 'roi', label: 'ROI box', kind: 'box', box: { x1: 10, y1: 20, x2: 100, y2: 200 } },
];

describe('toggleLayer', () => {
  it('switches independent layers on and off', () => {
    let visible = toggleLayer(LAYERS, [], 'contour');
    visible = toggleLayer(LAYERS, visible, 'roi');
    expect(visible).toEqual(['contour', 'roi']);
    expect(toggleLayer(LAYERS, visible, 'contour')).toEqual(['roi']);
  });

  it('keeps only one heat layer at a time', () => {
    const visible = toggleLayer(LAYERS, ['contour', 'gradcam'], 'focused');
    expect(visible).toEqual(['contour', 'focused']);
  });

  it('ignores layers that are missing or unavailable', () => {
    const layers: LayerDef[] = [...LAYERS, { id: 'none', label: 'None', kind: 'heatmap', src: null }];
    expect(toggleLayer(layers, ['contour'], 'none')).toEqual(['contour']);
    expect(toggleLayer(layers, ['contour'], 'nope')).toEqual(['contour']);
  });

  it('builds the initial visibility from the wanted ids', () => {
    expect(initialVisible(LAYERS, ['contour', 'gradcam', 'focused', 'roi'])).toEqual([
      'contour',
      'focused',
      'roi',
    ]);
  });
});

describe('LayerViewer', () => {
  it('shows the default layers and toggles them with their switches', async () => {
    const user = userEvent.setup();
    renderWithProviders(
      <LayerViewer baseSrc="blob:base" alt="slice" layers={LAYERS} defaultVisible={['contour', 'gradcam']} />,
    );
    expect(screen.getByAltText('slice')).toBeInTheDocument();
    expect(screen.getByTestId('layer-contour')).toBeInTheDocument();
    expect(screen.getByTestId('layer-gradcam')).toBeInTheDocument();
    expect(screen.queryByTestId('layer-roi')).not.toBeInTheDocument();

    await user.click(screen.getByRole('switch', { name: /ROI box/ }));
    expect(screen.getByTestId('layer-roi')).toBeInTheDocument();

    await user.click(screen.getByRole('switch', { name: /Segmentation contour/ }));
    expect(screen.queryByTestId('layer-contour')).not.toBeInTheDocument();

    // Turning on the focused heatmap turns the plain one off.
    await user.click(screen.getByRole('switch', { name: /Focused heatmap/ }));
    expect(screen.getByTestId('layer-focused')).toBeInTheDocument();
    expect(screen.queryByTestId('layer-gradcam')).not.toBeInTheDocument();
    expect(screen.getByRole('switch', { name: /Grad-CAM heatmap/ })).not.toBeChecked();
  });

  it('disables layers the result does not have', () => {
    const layers: LayerDef[] = [
      { id: 'mask', label: 'Segmentation mask', kind: 'mask', src: null },
      { id: 'roi', label: 'ROI box', kind: 'box', box: null },
    ];
    renderWithProviders(<LayerViewer baseSrc="blob:base" alt="slice" layers={layers} defaultVisible={['mask']} />);
    expect(screen.getByRole('switch', { name: /Segmentation mask/ })).toBeDisabled();
    expect(screen.getByRole('switch', { name: /ROI box/ })).toBeDisabled();
    expect(screen.queryByTestId('layer-mask')).not.toBeInTheDocument();
    expect(screen.getAllByText('Not available for this result')).toHaveLength(2);
  });

  it('applies the opacity slider to every visible layer', () => {
    renderWithProviders(
      <LayerViewer
        baseSrc="blob:base"
        alt="slice"
        layers={LAYERS}
        defaultVisible={['contour', 'roi']}
        defaultOpacity={60}
      />,
    );
    expect(screen.getByTestId('layer-contour')).toHaveStyle({ opacity: '0.6' });
    const thumb = screen.getByRole('slider', { name: 'Layer opacity' });
    fireEvent.keyDown(thumb, { key: 'ArrowRight' });
    fireEvent.keyDown(thumb, { key: 'ArrowRight' });
    expect(screen.getByTestId('layer-contour')).toHaveStyle({ opacity: '0.7' });
    expect(screen.getByTestId('layer-roi')).toHaveStyle({ opacity: '0.7' });
    fireEvent.keyDown(thumb, { key: 'Home' });
    expect(screen.getByTestId('layer-roi')).toHaveStyle({ opacity: '0' });
  });

  it('shows a default layer once its image arrives', () => {
    const loading: LayerDef[] = [{ id: 'gradcam', label: 'Grad-CAM heatmap', kind: 'heatmap', src: null }];
    const { rerender } = renderWithProviders(
      <LayerViewer baseSrc="blob:base" alt="slice" layers={loading} defaultVisible={['gradcam']} />,
    );
    expect(screen.queryByTestId('layer-gradcam')).not.toBeInTheDocument();
    rerender(
      <LayerViewer
        baseSrc="blob:base"
        alt="slice"
        layers={[{ ...loading[0]!, src: 'blob:heat' }]}
        defaultVisible={['gradcam']}
      />,
    );
    expect(screen.getByTestId('layer-gradcam')).toBeInTheDocument();
  });

  it('draws a labels layer as texts in an SVG at their points', async () => {
    const user = userEvent.setup();
    const layers: LayerDef[] = [
      {
        id: 'levels',
        label: 'Vertebral levels',
        kind: 'labels',
        labels: [
          { text: 'L4', x: 120, y: 90 },
          { text: 'L5', x: 125, y: 140 },
        ],
      },
    ];
    renderWithProviders(<LayerViewer baseSrc="blob:base" alt="slice" layers={layers} defaultVisible={['levels']} />);
    const layer = screen.getByTestId('layer-levels');
    expect(layer).toHaveAttribute('data-kind', 'labels');
    const svg = layer.querySelector('svg');
    expect(svg).not.toBeNull();
    expect(svg).toHaveAttribute('aria-hidden');
    const texts = Array.from(svg!.querySelectorAll('text'));
    expect(texts.map((t) => t.textContent)).toEqual(['L4', 'L5']);
    // Placed beside each point, on the point's height.
    expect(Number(texts[0]!.getAttribute('x'))).toBeGreaterThan(120);
    expect(Number(texts[1]!.getAttribute('y'))).toBeGreaterThan(140);

    await user.click(screen.getByRole('switch', { name: /Vertebral levels/ }));
    expect(screen.queryByTestId('layer-levels')).not.toBeInTheDocument();
  });

  it('offers a labels layer only when it has labels', () => {
    const base: LayerDef = { id: 'levels', label: 'Vertebral levels', kind: 'labels' };
    expect(layerAvailable({ ...base, labels: [{ text: 'L1', x: 1, y: 2 }] })).toBe(true);
    expect(layerAvailable({ ...base, labels: [] })).toBe(false);
    expect(layerAvailable({ ...base, labels: null })).toBe(false);
    expect(layerAvailable(base)).toBe(false);
    // A src does not make a labels layer available.
    expect(layerAvailable({ ...base, src: 'blob:x' })).toBe(false);
    renderWithProviders(
      <LayerViewer baseSrc="blob:base" alt="slice" layers={[{ ...base, labels: [] }]} defaultVisible={['levels']} />,
    );
    expect(screen.getByRole('switch', { name: /Vertebral levels/ })).toBeDisabled();
    expect(screen.queryByTestId('layer-levels')).not.toBeInTheDocument();
  });
});
