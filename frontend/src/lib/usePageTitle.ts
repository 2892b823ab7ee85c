import { useEffect } from 'react';

/** Each page names itself in the tab title, which screen readers also announce. */
export function usePageTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · spondyscan` : 'spondyscan';
  }, [title]);
}
