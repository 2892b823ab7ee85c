import { fireEvent, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { slice } from '../test/fixtures';
import { renderWithProviders } from '../test/render';
import { CHART_FRAME, chartX } from '../lib/studies';
import { SeriesChart } from './SeriesChart';

const SLICES = [0, 1, 2, 3, 4].map((i) => slice(i, { key: i === 2 || i === 3 }));

describe('SeriesChart', () => {
  it('is an image with a title and a description, and a table alternative', async () => {
    const user = userEvent.setup();
    renderWithProviders(<SeriesChart slices={SLICES} keySlices={[2, 3]} current={1} onSelect={() => {}} names={{ cnn: 'CNN' }} />);
    const img = screen.getByRole('img', { name: /Probability of AS positive along the series/ });
    expect(img).toHaveAccessibleName(/key slices 3, 4 are shaded; slice 2 is marked/);
    expect(img).toHaveAccessibleName(/CNN: from 20% to 60%, highest on slice 5/);
    expect(screen.getAllByTestId('chart-key-band')).toHaveLength(1);
    await user.click(screen.getByText('Chart data as a table'));
    const table = screen.getByTestId('series-chart-table');
    expect(within(table).getAllByRole('row')).toHaveLength(6);
    expect(within(table).getByRole('columnheader', { name: 'CNN' })).toBeInTheDocument();
  });

  it('jumps to the slice nearest to a click', () => {
    const onSelect = vi.fn();
    renderWithProviders(<SeriesChart slices={SLICES} keySlices={[]} current={0} onSelect={onSelect} names={{}} />);
    const svg = screen.getByRole('img');
    // jsdom has no layout: give the drawing its natural size at the page's origin.
    svg.getBoundingClientRect = () => ({ left: 0, top: 0, width: CHART_FRAME.width, height: CHART_FRAME.height }) as DOMRect;
    fireEvent.click(svg, { clientX: chartX(3, 5) + 2, clientY: 50 });
    expect(onSelect).toHaveBeenCalledWith(3);
  });

  it('says why there is nothing to plot', () => {
    renderWithProviders(
      <SeriesChart slices={[slice(0, { classifications: [] })]} keySlices={[]} current={0} onSelect={() => {}} names={{}} emptyReason="Model outputs were withheld." />,
    );
    expect(screen.getByTestId('series-chart-empty')).toHaveTextContent('Model outputs were withheld.');
    expect(screen.queryByRole('img')).not.toBeInTheDocument();
  });
});
