import { describe, expect, it } from 'vitest';
import { jobProgressText } from '../components/RunStatus';
import { historyLink, historyName } from './HistoryPage';
import { itemOutcome } from './JobDetailPage';
import { jobQueryFromParams } from './JobsPage';
import { studyQueryFromParams } from './StudiesPage';

describe('list filters from the address', () => {
  it('builds the studies query', () => {
    expect(studyQueryFromParams(new URLSearchParams('page=2&status=done&as=positive'))).toEqual({
      limit: 10,
      offset: 10,
      status: 'done',
      as_status: 'positive',
    });
    expect(studyQueryFromParams(new URLSearchParams('status=exploded&as=maybe'))).toMatchObject({
      offset: 0,
      status: undefined,
      as_status: undefined,
    });
  });

  it('lists batch jobs unless study jobs are asked for', () => {
    expect(jobQueryFromParams(new URLSearchParams('')).kind).toBe('batch');
    expect(jobQueryFromParams(new URLSearchParams('studies=1')).kind).toBeUndefined();
    expect(jobQueryFromParams(new URLSearchParams('status=running&page=3'))).toMatchObject({ status: 'running', offset: 20 });
  });
});

describe('history and jobs', () => {
  it('links studies to their own page', () => {
    expect(historyLink({ id: 'x', kind: 'study' })).toBe('/studies/x');
    expect(historyLink({ id: 'x', kind: 'analysis' })).toBe('/history/x');
    expect(historyName({ kind: 'study', filename: null })).toBe('Series study');
    expect(historyName({ kind: 'classify', filename: 'a.png' })).toBe('a.png');
  });

  it('reads the first model’s outcome from an item summary', () => {
    expect(
      itemOutcome({ classifications: [{ model: 'cnn', as_status: 'positive', stage: 'Early', p_positive: 0.8 }] }),
    ).toEqual({ model: 'cnn', as_status: 'positive', stage: 'Early', p_positive: 0.8 });
    expect(itemOutcome({ models: [{ model: 'cnn', as_status: 'negative', stage: 'Normal' }] })?.p_positive).toBeNull();
    expect(itemOutcome({ classifications: [] })).toBeNull();
    expect(itemOutcome(null)).toBeNull();
  });

  it('words a job’s progress', () => {
    expect(jobProgressText({ done: 1, failed: 1, cancelled: 0, finished: 2, total: 3, percent: 66.7 })).toBe(
      '2 of 3 finished: 1 done, 1 failed',
    );
  });
});
