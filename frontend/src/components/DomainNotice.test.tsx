import { screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { renderWithProviders } from '../test/render';
import { DomainBanner, domainScoreSentence, ownReasons, WithheldNotice } from './DomainNotice';

describe('DomainBanner', () => {
  it('warns with the reasons and the score when out of the domain', () => {
    renderWithProviders(
      <DomainBanner
        domain={{ in_domain: false, score: 6.564, reasons: ['its image statistics are far from the training slices (score 6.56 > 1)', 'the image is CT, the models were trained on MR'] }}
      />,
    );
    const banner = screen.getByRole('note');
    expect(banner).toHaveTextContent('This image is unlike the slices the models were trained on');
    expect(banner).toHaveTextContent('The image is CT, the models were trained on MR');
    expect(banner).toHaveTextContent('Domain score 6.56');
    // The score is not said twice.
    expect(banner).not.toHaveTextContent('6.56 > 1');
  });

  it('announces itself when the result just arrived', () => {
    renderWithProviders(<DomainBanner domain={{ in_domain: false, score: 2, reasons: [] }} live />);
    expect(screen.getByRole('alert')).toHaveTextContent('unlike the slices');
  });

  it('counts out-of-domain slices of a study', () => {
    renderWithProviders(
      <DomainBanner subject="study" domain={{ in_domain: false, score: null, reasons: ['the segmenter found no lumbosacral structures in any slice'], slices_out_of_domain: 3, slices_checked: 12 }} />,
    );
    expect(screen.getByRole('note')).toHaveTextContent('This series is unlike');
    expect(screen.getByRole('note')).toHaveTextContent('3 of 12 slices are out of the domain.');
    expect(screen.getByRole('note')).toHaveTextContent('The segmenter found no lumbosacral structures');
  });

  it('is a quiet line in the domain, and nothing when not checked', () => {
    const { rerender } = renderWithProviders(<DomainBanner domain={{ in_domain: true, score: 0.52, reasons: [] }} />);
    expect(screen.getByTestId('domain-ok')).toHaveTextContent('like the slices the models were trained on. Domain score 0.52');
    expect(screen.queryByRole('note')).not.toBeInTheDocument();
    rerender(<DomainBanner domain={{ in_domain: true, score: null, reasons: ['no reference distribution is installed: only the header was checked'] }} />);
    expect(screen.getByTestId('domain-ok')).toHaveTextContent('only the header was checked');
    rerender(<DomainBanner domain={null} />);
    expect(screen.queryByTestId('domain-ok')).not.toBeInTheDocument();
  });

  it('explains withheld outputs and how to see them', () => {
    renderWithProviders(<WithheldNotice />);
    expect(screen.getByRole('note')).toHaveTextContent('Model outputs withheld');
    expect(screen.getByRole('note')).toHaveTextContent('Show model outputs even for images unlike the training slices');
  });

  it('words the score and filters restated reasons', () => {
    expect(domainScoreSentence(null)).toBeNull();
    expect(domainScoreSentence(0.5)).toMatch(/^Domain score 0.50/);
    expect(ownReasons(['score 3 > 1', 'not MR', ' '], true)).toEqual(['not MR']);
    expect(ownReasons(['score 3 > 1'], false)).toEqual(['score 3 > 1']);
  });
});
