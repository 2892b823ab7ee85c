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
    '--mantine-color-red-filled': 'var(--mantine-color-red-8)',
    '--mantine-color-red-filled-hover': 'var(--mantine-color-red-9)',
    '--mantine-color-gray-light-color': 'var(--mantine-color-gray-8)',
    '--mantine-color-clinical-light-color': 'var(--mantine-color-clinical-8)',
  };
  for (const color of ['red', 'orange', 'yellow', 'teal', 'green', 'grape', 'blue']) {
    light[`--mantine-color-${color}-light-color`] = `var(--mantine-color-${color}-9)`;
  }
  return { variables: {}, light, dark: {} };
};
