import { describe, expect, it } from 'vitest';
import { historyQueryFromParams, localDayBound } from './HistoryPage';

describe('history filters', () => {
  it('turns address parameters into the API query', () => {
    const query = historyQueryFromParams(new URLSearchParams('page=3&status=positive&stage=Early&model=cnn'));
    expect(query).toMatchObject({ limit: 10, offset: 20, as_status: 'positive', stage: 'Early', model: 'cnn' });
    expect(query.date_from).toBeUndefined();
  });

  it('ignores unknown statuses and bad pages', () => {
    const query = historyQueryFromParams(new URLSearchParams('page=-4&status=maybe'));
    expect(query.offset).toBe(0);
    expect(query.as_status).toBeUndefined();
  });

  it('spans whole local days', () => {
    const from = new Date(localDayBound('2026-03-05', false) as string);
    const to = new Date(localDayBound('2026-03-05', true) as string);
    expect([from.getFullYear(), from.getMonth(), from.getDate(), from.getHours()]).toEqual([2026, 2, 5, 0]);
    expect([to.getDate(), to.getHours(), to.getMinutes()]).toEqual([5, 23, 59]);
    expect(localDayBound('yesterday', false)).toBeUndefined();
    expect(localDayBound(null, true)).toBeUndefined();
  });
});
