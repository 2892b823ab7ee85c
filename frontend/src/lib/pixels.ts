/**
 * Pixel work for the result viewer. The server sends masks and heatmaps as grayscale PNGs;
 * turning them into transparent coloured layers here lets the user switch and fade each layer
 * over the slice without another request.
 */

export type Rgb = readonly [number, number, number];

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

/** The JET colour map (blue -> cyan -> yellow -> red), as in the design's overlays. */
export function jet(t: number): Rgb {
  const x = clamp01(t);
  return [
    Math.round(255 * clamp01(1.5 - Math.abs(4 * x - 3))),
    Math.round(255 * clamp01(1.5 - Math.abs(4 * x - 2))),
    Math.round(255 * clamp01(1.5 - Math.abs(4 * x - 1))),
  ];
}

/** True when a sample of pixels has R = G = B (a grayscale PNG decoded to RGBA). */
export function isGrayscale(data: Uint8ClampedArray, samples = 512): boolean {
  const pixels = data.length / 4;
  const step = Math.max(1, Math.floor(pixels / samples));
  for (let p = 0; p < pixels; p += step) {
    const i = p * 4;
    if (data[i] !== data[i + 1] || data[i] !== data[i + 2]) return false;
  }
  return true;
}

const JET_LUT: Rgb[] = Array.from({ length: 256 }, (_, i) => jet(i / 255));

/**
 * The heat value behind a JET colour: the index of the nearest colour in the map. The server
 * draws its heatmaps with OpenCV's JET, which differs from ours by a few levels only, well
 * within what the alpha ramp below needs.
 */
export function jetValue(r: number, g: number, b: number, cache?: Map<number, number>): number {
  const key = (r << 16) | (g << 8) | b;
  const hit = cache?.get(key);
  if (hit !== undefined) return hit;
  let best = 0;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 256; i += 1) {
    const [lr, lg, lb] = JET_LUT[i] as Rgb;
    const distance = (lr - r) ** 2 + (lg - g) ** 2 + (lb - b) ** 2;
    if (distance < bestDistance) {
      bestDistance = distance;
      best = i;
    }
  }
  const value = best / 255;
  cache?.set(key, value);
  return value;
}

/**
 * Heatmap -> JET colours whose alpha grows with the heat, so cold areas leave the anatomy
 * visible. Grayscale heatmaps are coloured here; JET-coloured ones keep their colours and
 * get their heat back from the colour.
 */
export function colorizeHeatmap(data: Uint8ClampedArray): void {
  const gray = isGrayscale(data);
  const cache = new Map<number, number>();
  for (let i = 0; i < data.length; i += 4) {
    const r = data[i] as number;
    const g = data[i + 1] as number;
    const b = data[i + 2] as number;
    const t = gray ? r / 255 : jetValue(r, g, b, cache);
    if (gray) {
      const [cr, cg, cb] = jet(t);
      data[i] = cr;
      data[i + 1] = cg;
      data[i + 2] = cb;
    }
    data[i + 3] = Math.round(255 * clamp01(1.6 * t - 0.1));
  }
}

/** Mask (on where > 127) -> a flat colour where on, transparent elsewhere. */
export function tintMask(data: Uint8ClampedArray, color: Rgb): void {
  for (let i = 0; i < data.length; i += 4) {
    const on = (data[i] as number) > 127;
    data[i] = color[0];
    data[i + 1] = color[1];
    data[i + 2] = color[2];
    data[i + 3] = on ? 255 : 0;
  }
}

/** Mask -> its outline: pixels that are on and touch an off pixel (4-neighbourhood). */
export function contourMask(
  data: Uint8ClampedArray,
  width: number,
  height: number,
  color: Rgb,
): void {
  const on = new Uint8Array(width * height);
  for (let p = 0; p < on.length; p += 1) on[p] = (data[p * 4] as number) > 127 ? 1 : 0;
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const p = y * width + x;
      const edge =
        on[p] === 1 &&
        (x === 0 ||
          y === 0 ||
          x === width - 1 ||
          y === height - 1 ||
          on[p - 1] === 0 ||
          on[p + 1] === 0 ||
          on[p - width] === 0 ||
          on[p + width] === 0);
      const i = p * 4;
      data[i] = color[0];
      data[i + 1] = color[1];
      data[i + 2] = color[2];
      data[i + 3] = edge ? 255 : 0;
    }
  }
}
