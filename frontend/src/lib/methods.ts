import type { CamMethod } from '../client/types.gen';

/** Human names of the explanation methods, one table for every page that shows them. */
export const METHOD_LABELS: Record<CamMethod, string> = {
  gradcam: 'Grad-CAM',
  'gradcam++': 'Grad-CAM++',
  eigencam: 'Eigen-CAM',
  attention: 'Attention rollout',
  occlusion: 'Occlusion sensitivity',
  rise: 'RISE (random masks)',
  integrated_gradients: 'Integrated gradients',
};

export function methodLabel(method: CamMethod | string): string {
  return METHOD_LABELS[method as CamMethod] ?? method;
}
