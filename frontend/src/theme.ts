import { createTheme, type CSSVariablesResolver, type MantineColorsTuple } from '@mantine/core';

// A calm clinical blue; shade 7+ on white keeps text and buttons above WCAG AA contrast.
const clinical: MantineColorsTuple = [
  '#e7f1fb',
  '#cfe0f3',
  '#9ec0e8',
  '#699edd',
  '#3f81d3',
  '#256fcd',
  '#1565c0',
  '#0b54a3',
  '#034a93',
  '#003f82',
];

export const theme = createTheme({
  primaryColor: 'clinical',
  primaryShade: { light: 7, dark: 5 },
  colors: { clinical },
  fontFamily:
    'Inter, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "DejaVu Sans", sans-serif',
  headings: { fontWeight: '650' },
  defaultRadius: 'md',
  cursorType: 'pointer',
  components: {
    Button: { defaultProps: { radius: 'md' } },
    // Links inside sentences must be told apart without colour (WCAG 1.4.1): always underlined.
    Anchor: { defaultProps: { underline: 'always' } },
    // Icon-only close buttons need a name for screen readers.
    Modal: { defaultProps: { closeButtonProps: { 'aria-label': 'Close' } } },
    Drawer: { defaultProps: { closeButtonProps: { 'aria-label': 'Close' } } },
    Notification: {
      defaultProps: { closeButtonProps: { 'aria-label': 'Dismiss notification' } },
      // The default description grey is under 4.5:1 on white.
      styles: { description: { color: 'var(--mantine-color-gray-8)' } },
    },
    Paper: { defaultProps: { radius: 'md' } },
    Card: { defaultProps: { radius: 'md' } },
  },
});

/**
 * Mantine's light variants draw text in shade 6, under 4.5:1 on their pale backgrounds for
 * several colours, and white on red-6/7 is too light as well; darker shades keep badges, alert
 * titles, dimmed text and delete buttons at WCAG AA contrast.
 */
export const cssVariablesResolver: CSSVariablesResolver = () => {
  const light: Record<string, string> = {
    '--mantine-color-dimmed': 'var(--mantine-color-gray-7)',
    // Field errors in red-6 are 3.5:1 on white; red-8 passes AA for small text.
    '--mantine-color-error': 'var(--mantine-color-red-8)',
    // Placeholders (gray-5 by default) are read as hints: keep them at AA contrast too.
    '--mantine-color-placeholder': 'var(--mantine-color-gray-7)',
    '--mantine-color-red-filled': 'var(--mantine-color-red-8)',
    '--mantine-color-red-filled-hover': 'var(--mantine-color-red-9)',
    '--mantine-color-gray-light-color': 'var(--mantine-color-gray-8)',
    '--mantine-color-clinical-light-color': 'var(--mantine-color-clinical-8)',
  };
  // Text of light variants (badges, alerts) on their pale tint: shade 9 is enough for red, grape
  // and blue; orange, yellow, teal and green need darker tones than the palette has.
  const lightText: Record<string, string> = {
    red: 'var(--mantine-color-red-9)',
    grape: 'var(--mantine-color-grape-9)',
    blue: 'var(--mantine-color-blue-9)',
    orange: '#8a3200',
    yellow: '#6b4a00',
    teal: '#055c43',
    green: '#1f6b31',
  };
  for (const [color, value] of Object.entries(lightText)) {
    light[`--mantine-color-${color}-light-color`] = value;
  }
  // White text on the default filled shades (teal-6, orange-6, ...) is under 4.5:1.
  for (const color of ['teal', 'green', 'grape', 'blue', 'gray']) {
    light[`--mantine-color-${color}-filled`] = `var(--mantine-color-${color}-9)`;
  }
  light['--mantine-color-orange-filled'] = '#a33a00';
  light['--mantine-color-yellow-filled'] = '#7d5200';
  return { variables: {}, light, dark: {} };
};
