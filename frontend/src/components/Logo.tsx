import { Group, Text } from '@mantine/core';

export function Logo({ size = 28 }: { size?: number }) {
  return (
    <Group gap={8} wrap="nowrap">
      <svg width={size} height={size} viewBox="0 0 32 32" aria-hidden focusable="false">
        <rect width="32" height="32" rx="7" fill="#0b54a3" />
        <g fill="#fff">
          <rect x="12" y="4" width="8" height="5" rx="2" />
          <rect x="12" y="11" width="8" height="5" rx="2" />
          <rect x="12" y="18" width="8" height="5" rx="2" />
          <rect x="11" y="25" width="10" height="4" rx="2" />
        </g>
      </svg>
      <Text fw={700} size="lg" c="dark.8" style={{ letterSpacing: '-0.01em' }}>
        spondyscan
      </Text>
    </Group>
  );
}
