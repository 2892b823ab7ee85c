import { Button } from '@mantine/core';
import { IconMapOff } from '@tabler/icons-react';
import { Link } from 'react-router-dom';
import { EmptyState } from '../components/States';
import { usePageTitle } from '../lib/usePageTitle';

export function NotFoundPage() {
  usePageTitle('Page not found');
  return (
    <EmptyState
      icon={<IconMapOff size={28} aria-hidden />}
      title="Page not found"
      action={
        <Button component={Link} to="/analyze">
          Go to Analyze
        </Button>
      }
    >
      There is no page at this address.
    </EmptyState>
  );
}
