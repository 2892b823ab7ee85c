import { fireEvent, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { useState } from 'react';
import { describe, expect, it, vi } from 'vitest';
import { slice } from '../test/fixtures';
import { renderWithProviders } from '../test/render';
import type { StudySlice } from '../client/types.gen';
import { SliceViewer } from './SliceViewer';

vi.mock('../api/artifacts', () => ({
  useArtifactUrl: (url: string | null | undefined) => ({ url: url ? `blob:${url}` : null, isLoading: false, isError: false, error: null }),
  fetchArtifact: vi.fn(async () => new Blob(['x'])),
}));

const HEAT = {
  model: 'cnn',
  class_label: 'positive',
  probability: 0.7,
  heatmap_url: '/artifacts/s1/heat_1.png',
  overlay_url: '/artifacts/s1/overlay_1.png',
};

function Harness({ slices, start = 0 }: { slices: StudySlice[]; start?: number }) {
  const [index, setIndex] = useState(start);
  return <SliceViewer slices={slices} index={index} onIndexChange={setIndex} names={{ cnn: 'CNN' }} />;
}

const SERIES = [
  slice(0),
  slice(1, { key: true, heatmaps: [HEAT] }),
  slice(2, { mask_url: null, domain: { in_domain: false, score: 3.2, reasons: [] }, error: 'not readable DICOM' }),
];

describe('SliceViewer', () => {
  it('moves with the keyboard when the viewer has focus', async () => {
    const user = userEvent.setup();
    renderWithProviders(<Harness slices={SERIES} />);
    const viewer = screen.getByRole('group', { name: /Arrow keys/ });
    expect(viewer).toHaveAttribute('tabindex', '0');
    expect(screen.getByTestId('slice-label')).toHaveTextContent('Slice 1 of 3');
    expect(screen.getByTestId('slice-label')).toHaveAttribute('aria-live', 'polite');
    viewer.focus();
    await user.keyboard('{ArrowRight}');
    expect(screen.getByTestId('slice-label')).toHaveTextContent('Slice 2 of 3');
    await user.keyboard('{End}');
    expect(screen.getByTestId('slice-label')).toHaveTextContent('Slice 3 of 3');
    await user.keyboard('{ArrowUp}{Home}');
    expect(screen.getByTestId('slice-label')).toHaveTextContent('Slice 1 of 3');
  });

  it('moves with the mouse wheel over the image', () => {
    renderWithProviders(<Harness slices={SERIES} />);
    const viewer = screen.getByTestId('slice-viewer');
    fireEvent.wheel(viewer, { deltaY: 60 });
    expect(screen.getByTestId('slice-label')).toHaveTextContent('Slice 2 of 3');
    fireEvent.wheel(viewer, { deltaY: -20 });
    expect(screen.getByTestId('slice-label')).toHaveTextContent('Slice 2 of 3');
    fireEvent.wheel(viewer, { deltaY: -40 });
    expect(screen.getByTestId('slice-label')).toHaveTextContent('Slice 1 of 3');
  });

  it('shows the heatmap on key slices only and the mask where there is one', async () => {
    const user = userEvent.setup();
    renderWithProviders(<Harness slices={SERIES} />);
    expect(screen.getByRole('switch', { name: /^Heatmap/ })).toBeDisabled();
    expect(screen.getByText('Heatmaps exist on the key slices only')).toBeInTheDocument();
    expect(screen.getByTestId('slice-mask-layer')).toBeInTheDocument();
    await user.click(screen.getByRole('switch', { name: /^Segmentation mask/ }));
    expect(screen.queryByTestId('slice-mask-layer')).not.toBeInTheDocument();
    await user.click(screen.getByRole('switch', { name: /^Segmentation mask/ }));

    screen.getByTestId('slice-viewer').focus();
    await user.keyboard('{ArrowRight}');
    expect(screen.getByTestId('key-slice-badge')).toBeInTheDocument();
    expect(screen.getByRole('switch', { name: /^Heatmap/ })).toBeEnabled();
    expect(screen.getByTestId('slice-heatmap-layer')).toHaveAttribute('src', 'blob:/artifacts/s1/heat_1.png');

    await user.keyboard('{ArrowRight}');
    expect(screen.getByTestId('slice-ood-badge')).toBeInTheDocument();
    expect(screen.getByRole('switch', { name: /^Segmentation mask/ })).toBeDisabled();
    expect(screen.getByText('not readable DICOM')).toBeInTheDocument();
    expect(screen.getByTestId('slice-classifications')).toHaveTextContent('CNN');
  });

  it('disables the heatmap switch when the study has no heatmaps at all', () => {
    renderWithProviders(
      <SliceViewer slices={[slice(0), slice(1)]} index={0} onIndexChange={() => {}} names={{}} noHeatmapReason="No key slices, so no heatmaps" />,
    );
    expect(screen.getByRole('switch', { name: /^Heatmap/ })).toBeDisabled();
    expect(screen.getByText('No key slices, so no heatmaps')).toBeInTheDocument();
  });
});
