import {
  Alert,
  Button,
  Checkbox,
  CloseButton,
  Grid,
  Group,
  Image,
  Paper,
  Select,
  Stack,
  Text,
  ThemeIcon,
  Title,
} from '@mantine/core';
import { IconAlertTriangle, IconCpu, IconFileTypography, IconPlayerPlay } from '@tabler/icons-react';
import { useEffect, useState } from 'react';
import { Link, useNavigate } from 'react-router-dom';
import { useObjectUrl } from '../api/artifacts';
import { useCreateAnalysis, useLimits, useModels } from '../api/queries';
import { CamMethod } from '../client/types.gen';
import { AnalysisProgress } from '../components/AnalysisProgress';
import { ErrorAlert } from '../components/ErrorAlert';
import { ImageDropzone } from '../components/ImageDropzone';
import { defaultSelection, ModelPicker, selectionError } from '../components/ModelPicker';
import { PageHeader } from '../components/PageHeader';
import { ResearchNotice } from '../components/ResearchNotice';
import { SegmenterSelect } from '../components/SegmenterSelect';
import { CardsSkeleton, EmptyState } from '../components/States';
import {
  KIND_LABELS,
  previewable,
  readHeader,
  sniffFormat,
  SUPPORTED_TEXT,
  type ImageKind,
} from '../lib/fileFormat';
import { formatBytes } from '../lib/format';
import { usePageTitle } from '../lib/usePageTitle';

interface Chosen {
  file: File;
  kind: ImageKind;
}

function FilePreview({ chosen, onClear, disabled }: { chosen: Chosen; onClear: () => void; disabled: boolean }) {
  const previewUrl = useObjectUrl(previewable(chosen.kind) ? chosen.file : null);
  const [broken, setBroken] = useState(false);
  return (
    <Paper withBorder p="md" data-testid="file-preview">
      <Group justify="space-between" align="flex-start" wrap="nowrap" mb="sm">
        <Stack gap={2} miw={0}>
          <Text fw={600} truncate="end">
            {chosen.file.name || 'Unnamed file'}
          </Text>
          <Text size="sm" c="dimmed">
            {KIND_LABELS[chosen.kind]} · {formatBytes(chosen.file.size)}
          </Text>
        </Stack>
        <CloseButton aria-label="Remove this file" onClick={onClear} disabled={disabled} />
      </Group>
      {previewUrl && !broken ? (
        <Image
          onError={() => setBroken(true)}
          src={previewUrl}
          alt={`Preview of ${chosen.file.name}`}
          radius="sm"
          fit="contain"
          mah={420}
          bg="black"
        />
      ) : (
        <Group gap="sm" p="lg" bg="gray.0" style={{ borderRadius: 8 }}>
          <ThemeIcon variant="light" size="lg">
            <IconFileTypography size={20} aria-hidden />
          </ThemeIcon>
          <Text size="sm" c="dimmed" maw={420}>
            {broken
              ? `Your browser cannot display this ${KIND_LABELS[chosen.kind]} file; it may be damaged. The server will check it.`
              : `No browser preview for ${KIND_LABELS[chosen.kind]} files.`}
            {broken ? null : (
              <> The server reads the slice
                {chosen.kind === 'nifti' ? ' (mid-sagittal)' : chosen.kind === 'dicom' ? ' (middle frame when there are several)' : ''}{' '}
                and shows it with the result.
              </>
            )}
          </Text>
        </Group>
      )}
    </Paper>
  );
}

// Attention rollout needs a model with attention layers, so it is offered per model elsewhere.
// "default": each model's measured best method (its manifest), sent as no method at all.
const MODEL_DEFAULT = 'default';
const EXPLANATION_METHODS: { value: string; label: string }[] = [
  { value: MODEL_DEFAULT, label: "Each model's best measured method (recommended)" },
  { value: CamMethod.GRADCAM, label: 'Grad-CAM' },
  { value: CamMethod.GRADCAM2, label: 'Grad-CAM++' },
  { value: CamMethod.EIGENCAM, label: 'Eigen-CAM' },
  { value: CamMethod.OCCLUSION, label: 'Occlusion sensitivity' },
  { value: CamMethod.RISE, label: 'RISE (random masks)' },
  { value: CamMethod.INTEGRATED_GRADIENTS, label: 'Integrated gradients' },
];

export function AnalyzePage() {
  usePageTitle('Analyze');
  const navigate = useNavigate();
  const models = useModels();
  const limits = useLimits().data;
  const maxModels = limits?.max_models_per_request;
  const analysis = useCreateAnalysis();
  const [chosen, setChosen] = useState<Chosen | null>(null);
  const [fileError, setFileError] = useState<string | null>(null);
  const [selected, setSelected] = useState<string[] | null>(null);
  const [allowOutOfDomain, setAllowOutOfDomain] = useState(false);
  const [method, setMethod] = useState<string>(MODEL_DEFAULT);
  const [segmenter, setSegmenter] = useState<string | null>(null);

  // Preselect the registry defaults once the registry arrives.
  useEffect(() => {
    if (models.data && selected === null) setSelected(defaultSelection(models.data));
  }, [models.data, selected]);

  const pickFile = async (file: File) => {
    analysis.reset();
    setFileError(null);
    setChosen(null);
    if (file.size === 0) {
      setFileError('The file is empty.');
      return;
    }
    try {
      const kind = sniffFormat(await readHeader(file), file.name);
      if (!kind) {
        setFileError(`"${file.name}" is not an image spondyscan can read. Use ${SUPPORTED_TEXT}.`);
        return;
      }
      setChosen({ file, kind });
    } catch {
      setFileError('The file could not be read from your device.');
    }
  };

  const keys = selected ?? [];
  const classifiers = models.data?.filter((m) => m.task === 'classification') ?? [];
  const canRun = Boolean(chosen) && !selectionError(keys, maxModels) && !analysis.isPending;

  const run = () => {
    if (!chosen) return;
    analysis.mutate(
      {
        file: chosen.file,
        models: keys,
        allowOutOfDomain,
        method: method === MODEL_DEFAULT ? undefined : (method as CamMethod),
        segmentationModel: segmenter ?? undefined,
      },
      { onSuccess: (result) => navigate(`/history/${result.id}`, { state: { fresh: true } }) },
    );
  };

  return (
    <>
      <PageHeader
        title="Analyze a slice"
        description="Upload one sagittal lumbar spine MRI slice. spondyscan segments the lumbosacral region, classifies AS status and stage with each model you choose, and explains every decision with a heatmap."
      />
      <Grid gutter="lg">
        <Grid.Col span={{ base: 12, md: 7 }}>
          <Stack gap="md">
            <Title order={2} size="h4">
              1. Image
            </Title>
            {chosen ? (
              <FilePreview
                chosen={chosen}
                onClear={() => {
                  setChosen(null);
                  analysis.reset();
                }}
                disabled={analysis.isPending}
              />
            ) : (
              <ImageDropzone
                onFile={(file) => void pickFile(file)}
                onReject={setFileError}
                maxBytes={limits?.max_upload_bytes}
                disabled={analysis.isPending}
              />
            )}
            {fileError && (
              <Alert
                color="red"
                variant="light"
                title="This file cannot be analysed"
                icon={<IconAlertTriangle size={18} aria-hidden />}
                role="alert"
                data-testid="file-error"
              >
                {fileError}
              </Alert>
            )}
          </Stack>
        </Grid.Col>
        <Grid.Col span={{ base: 12, md: 5 }}>
          <Stack gap="md">
            <Group justify="space-between">
              <Title order={2} size="h4">
                2. Models
              </Title>
              <Button component={Link} to="/models" variant="subtle" size="compact-sm">
                About the models
              </Button>
            </Group>
            {models.isPending && <CardsSkeleton count={2} height={84} />}
            {models.isError && <ErrorAlert error={models.error} onRetry={() => void models.refetch()} />}
            {models.data && classifiers.length === 0 && (
              <EmptyState icon={<IconCpu size={28} aria-hidden />} title="No classification models installed">
                The server has no classifier bundles. Add bundles under models/ and restart it.
              </EmptyState>
            )}
            {models.data && classifiers.length > 0 && (
              <ModelPicker
                models={models.data}
                value={keys}
                onChange={setSelected}
                max={maxModels}
                disabled={analysis.isPending}
              />
            )}
            <SegmenterSelect
              models={models.data}
              value={segmenter}
              onChange={setSegmenter}
              disabled={analysis.isPending}
            />
            <Select
              label="Explanation method"
              description="By default each model uses the method that scored best in its faithfulness benchmark (see its model page). Grad-CAM family: from a layer's activations; occlusion, RISE and integrated gradients: from the input (slower). Each result says how faithful its map is."
              data={EXPLANATION_METHODS}
              value={method}
              onChange={(value) => value && setMethod(value)}
              allowDeselect={false}
              disabled={analysis.isPending}
              data-testid="method"
            />
            <Checkbox
              label="Show model outputs even for images unlike the training slices"
              description="Such images are always flagged; without this, their AS status, stage and heatmaps are withheld."
              checked={allowOutOfDomain}
              onChange={(event) => setAllowOutOfDomain(event.currentTarget.checked)}
              disabled={analysis.isPending}
              data-testid="allow-ood"
            />
            <Button
              size="md"
              leftSection={<IconPlayerPlay size={18} aria-hidden />}
              onClick={run}
              disabled={!canRun}
              loading={analysis.isPending}
              data-testid="run-analysis"
            >
              Run analysis
            </Button>
            {!chosen && !analysis.isPending && (
              <Text size="xs" c="dimmed">
                Choose an image to enable the analysis.
              </Text>
            )}
            {analysis.isPending && <AnalysisProgress models={keys.length} />}
            {analysis.isError && (
              <ErrorAlert error={analysis.error} onRetry={run} />
            )}
            <ResearchNotice />
          </Stack>
        </Grid.Col>
      </Grid>
    </>
  );
}
