import {
  Box as MantineBox,
  Group,
  Paper,
  Skeleton,
  Slider,
  Stack,
  Switch,
  Text,
  Tooltip,
} from '@mantine/core';
import { useEffect, useId, useRef, useState } from 'react';
import { colorizeHeatmap, contourMask, tintMask, type Rgb } from '../lib/pixels';
import classes from './LayerViewer.module.css';

export type LayerKind = 'mask' | 'contour' | 'heatmap' | 'overlay' | 'box' | 'labels';

export interface PointLabel {
  text: string;
  x: number;
  y: number;
}

export interface BoxCoords {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

export interface LayerDef {
  id: string;
  label: string;
  kind: LayerKind;
  /** blob: URL of the layer image (mask, heatmap or overlay). */
  src?: string | null;
  /** For `box` layers, in the coordinates of the base image. */
  box?: BoxCoords | null;
  /** For `labels` layers: short texts at points of the base image (e.g. vertebral levels). */
  labels?: PointLabel[] | null;
  description?: string;
  loading?: boolean;
}

export const LAYER_COLORS: Record<'mask' | 'contour' | 'box', Rgb> = {
  mask: [18, 184, 134],
  contour: [252, 196, 25],
  box: [255, 107, 107],
};

/** Heat layers share one slot: two heatmaps on top of each other would hide each other. */
const EXCLUSIVE: LayerKind[] = ['heatmap', 'overlay'];

export function layerAvailable(layer: LayerDef): boolean {
  if (layer.kind === 'box') return Boolean(layer.box);
  if (layer.kind === 'labels') return Boolean(layer.labels?.length);
  return Boolean(layer.src) || Boolean(layer.loading);
}

/** Visibility after toggling one layer: heat layers are exclusive, others independent. */
export function toggleLayer(layers: LayerDef[], visible: string[], id: string): string[] {
  const layer = layers.find((l) => l.id === id);
  if (!layer || !layerAvailable(layer)) return visible;
  if (visible.includes(id)) return visible.filter((v) => v !== id);
  const exclusive = EXCLUSIVE.includes(layer.kind);
  const kept = exclusive
    ? visible.filter((v) => {
        const other = layers.find((l) => l.id === v);
        return !other || !EXCLUSIVE.includes(other.kind);
      })
    : visible;
  return [...kept, id];
}

/** Initial visibility: the requested ids that exist and are available, heat layers exclusive. */
export function initialVisible(layers: LayerDef[], wanted: string[]): string[] {
  return wanted.reduce<string[]>(
    (acc, id) => (acc.includes(id) ? acc : toggleLayer(layers, acc, id)),
    [],
  );
}

function PixelLayer({ layer }: { layer: LayerDef }) {
  const ref = useRef<HTMLCanvasElement>(null);
  const [ready, setReady] = useState(false);
  useEffect(() => {
    if (!layer.src) return undefined;
    let cancelled = false;
    setReady(false);
    const img = new Image();
    img.onload = () => {
      const canvas = ref.current;
      if (cancelled || !canvas) return;
      const w = img.naturalWidth;
      const h = img.naturalHeight;
      canvas.width = w;
      canvas.height = h;
      const ctx = canvas.getContext('2d', { willReadFrequently: true });
      if (!ctx) return;
      ctx.drawImage(img, 0, 0);
      const frame = ctx.getImageData(0, 0, w, h);
      if (layer.kind === 'heatmap') colorizeHeatmap(frame.data);
      else if (layer.kind === 'mask') tintMask(frame.data, LAYER_COLORS.mask);
      else if (layer.kind === 'contour') contourMask(frame.data, w, h, LAYER_COLORS.contour);
      ctx.putImageData(frame, 0, 0);
      setReady(true);
    };
    img.src = layer.src;
    return () => {
      cancelled = true;
    };
  }, [layer.src, layer.kind]);
  return (
    <canvas
      ref={ref}
      className={classes.layer}
      data-ready={ready || undefined}
      aria-hidden
    />
  );
}

function LayerContent({ layer, imageSize }: { layer: LayerDef; imageSize: number }) {
  if (layer.kind === 'box' && layer.box) {
    const { x1, y1, x2, y2 } = layer.box;
    const [r, g, b] = LAYER_COLORS.box;
    return (
      <svg
        className={classes.layer}
        viewBox={`0 0 ${imageSize} ${imageSize}`}
        preserveAspectRatio="none"
        aria-hidden
      >
        <rect
          x={x1}
          y={y1}
          width={Math.max(1, x2 - x1)}
          height={Math.max(1, y2 - y1)}
          fill="none"
          stroke={`rgb(${r},${g},${b})`}
          strokeWidth={imageSize / 128}
          strokeDasharray={`${imageSize / 40} ${imageSize / 80}`}
          vectorEffect="non-scaling-stroke"
        />
      </svg>
    );
  }
  if (layer.kind === 'labels' && layer.labels?.length) {
    const size = imageSize / 18;
    return (
      <svg className={classes.layer} viewBox={`0 0 ${imageSize} ${imageSize}`} preserveAspectRatio="none" aria-hidden>
        {layer.labels.map((l) => (
          <text
            key={`${l.text}-${l.x}-${l.y}`}
            x={Math.min(l.x + imageSize * 0.07, imageSize - size * 1.6)}
            y={l.y + size / 3}
            fontSize={size}
            fontWeight={700}
            fill="rgb(255,236,61)"
            stroke="black"
            strokeWidth={size / 8}
            paintOrder="stroke"
          >
            {l.text}
          </text>
        ))}
      </svg>
    );
  }
  if (!layer.src) return null;
  if (layer.kind === 'overlay') {
    return <img className={classes.layer} src={layer.src} alt="" aria-hidden />;
  }
  return <PixelLayer layer={layer} />;
}

interface LayerViewerProps {
  baseSrc: string | null;
  baseLoading?: boolean;
  alt: string;
  layers: LayerDef[];
  defaultVisible?: string[];
  /** Side of the square image the box coordinates refer to. */
  imageSize?: number;
  defaultOpacity?: number;
}

/**
 * The slice with switchable layers stacked on top (segmentation mask and contour, heatmaps,
 * ROI box) and one opacity slider for all of them.
 */
export function LayerViewer({
  baseSrc,
  baseLoading = false,
  alt,
  layers,
  defaultVisible = [],
  imageSize = 256,
  defaultOpacity = 60,
}: LayerViewerProps) {
  const [visible, setVisible] = useState<string[]>(() => initialVisible(layers, defaultVisible));
  const [opacity, setOpacity] = useState(defaultOpacity);
  const sliderLabelId = useId();

  // Layers arrive as their images load: show the default ones once they become available.
  const availableKey = layers.filter(layerAvailable).map((l) => l.id).join('|');
  const [seen, setSeen] = useState(availableKey);
  if (seen !== availableKey) {
    setSeen(availableKey);
    const fresh = defaultVisible.filter(
      (id) => availableKey.split('|').includes(id) && !seen.split('|').includes(id),
    );
    if (fresh.length > 0) {
      setVisible((current) =>
        fresh.reduce((acc, id) => (acc.includes(id) ? acc : toggleLayer(layers, acc, id)), current),
      );
    }
  }

  const shown = layers.filter((l) => visible.includes(l.id) && layerAvailable(l));

  return (
    <Stack gap="sm">
      <Paper withBorder className={classes.stage} data-testid="layer-stage">
        {baseSrc ? (
          <img className={classes.base} src={baseSrc} alt={alt} />
        ) : (
          <Skeleton className={classes.base} animate={baseLoading} aria-label={alt} />
        )}
        {shown.map((layer) => (
          <MantineBox
            key={layer.id}
            className={classes.layerWrap}
            style={{ opacity: opacity / 100 }}
            data-testid={`layer-${layer.id}`}
            data-kind={layer.kind}
          >
            <LayerContent layer={layer} imageSize={imageSize} />
          </MantineBox>
        ))}
      </Paper>

      <Paper withBorder p="sm">
        <Text size="sm" fw={600} mb={6} component="h3" id={`${sliderLabelId}-layers`}>
          Layers
        </Text>
        <Stack gap={8} role="group" aria-labelledby={`${sliderLabelId}-layers`}>
          {layers.map((layer) => {
            const available = layerAvailable(layer);
            const control = (
              <Switch
                key={layer.id}
                label={layer.label}
                description={available ? layer.description : 'Not available for this result'}
                checked={visible.includes(layer.id)}
                disabled={!available}
                onChange={() => setVisible((current) => toggleLayer(layers, current, layer.id))}
                data-testid={`toggle-${layer.id}`}
                size="sm"
              />
            );
            return available ? (
              control
            ) : (
              <Tooltip key={layer.id} label="This result has no such layer" position="top-start">
                <div>{control}</div>
              </Tooltip>
            );
          })}
        </Stack>
        <Group mt="md" gap="sm" wrap="nowrap" align="center">
          <Text size="sm" id={sliderLabelId} style={{ whiteSpace: 'nowrap' }}>
            Layer opacity
          </Text>
          <Slider
            flex={1}
            value={opacity}
            onChange={setOpacity}
            min={0}
            max={100}
            step={5}
            label={(v) => `${v}%`}
            thumbLabel="Layer opacity"
            data-testid="opacity-slider"
          />
          <Text size="sm" w={40} ta="right" aria-hidden>
            {opacity}%
          </Text>
        </Group>
        {shown.some((l) => l.kind === 'heatmap') && (
          <Group gap={6} mt="sm" align="center" aria-label="Heatmap colour scale: low to high">
            <Text size="xs" c="dimmed">
              low
            </Text>
            <div className={classes.legend} />
            <Text size="xs" c="dimmed">
              high attention
            </Text>
          </Group>
        )}
      </Paper>
    </Stack>
  );
}
