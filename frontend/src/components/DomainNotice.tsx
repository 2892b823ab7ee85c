import { Alert, Group, List, Text, ThemeIcon } from '@mantine/core';
import { IconAlertTriangle, IconCircleCheck, IconEyeOff, IconInfoCircle } from '@tabler/icons-react';
import type { DomainInfo, StudyDomain } from '../client/types.gen';

export type Subject = 'image' | 'study';

/** The domain score in words: how far from the training slices, against the limit of 1. */
export function domainScoreSentence(score: number | null | undefined): string | null {
  if (score === null || score === undefined || !Number.isFinite(score)) return null;
  return `Domain score ${score.toFixed(2)} (at most 1.00 means like the training slices).`;
}

/** Reasons that only restate the score are left out when the score has its own line. */
export function ownReasons(reasons: string[] | undefined, scoreShown: boolean): string[] {
  return (reasons ?? []).filter((r) => r.trim().length > 0 && !(scoreShown && /\bscore\b/i.test(r)));
}

interface DomainBannerProps {
  domain: DomainInfo | StudyDomain | null | undefined;
  subject?: Subject;
  /** Announce at once (a result that just arrived); a page read later gets a plain note. */
  live?: boolean;
}

/**
 * The applicability-domain check: a warning banner when the image (or series) is unlike the
 * slices the models were trained on, with the reasons and the score; nothing when it was not
 * checked, a quiet line when it passed.
 */
export function DomainBanner({ domain, subject = 'image', live = false }: DomainBannerProps) {
  if (!domain) return null;
  const what = subject === 'study' ? 'series' : 'image';
  const score = domainScoreSentence(domain.score);
  const reasons = ownReasons(domain.reasons, score !== null);
  const slices =
    'slices_checked' in domain && (domain.slices_checked ?? 0) > 0
      ? `${domain.slices_out_of_domain ?? 0} of ${domain.slices_checked} slices are out of the domain.`
      : null;
  if (domain.in_domain) {
    return (
      <Group gap="xs" wrap="nowrap" align="flex-start" data-testid="domain-ok">
        <ThemeIcon variant="light" color="teal" size="sm" radius="xl">
          <IconCircleCheck size={14} aria-hidden />
        </ThemeIcon>
        <Text size="sm">
          <strong>Applicability domain:</strong>{' '}
          {domain.score == null
            ? `only the ${subject === 'study' ? 'headers were' : 'header was'} checked${
                reasons.length > 0 ? ` (${reasons.join('; ')})` : ''
              }.`
            : `the ${what} is like the slices the models were trained on. ${score ?? ''}`}
          {slices ? ` ${slices}` : ''}
        </Text>
      </Group>
    );
  }
  return (
    <Alert
      color="orange"
      variant="light"
      icon={<IconAlertTriangle size={20} aria-hidden />}
      title={`This ${what} is unlike the slices the models were trained on`}
      role={live ? 'alert' : 'note'}
      data-testid="domain-banner"
    >
      <Text size="sm">
        The models&apos; answers may not be meaningful outside their training domain
        {subject === 'study' ? ' (sagittal lumbar MR series)' : ' (sagittal lumbar MR slices)'}.
      </Text>
      {reasons.length > 0 && (
        <List size="sm" mt={6} spacing={2}>
          {reasons.map((reason) => (
            <List.Item key={reason}>{reason.charAt(0).toUpperCase() + reason.slice(1)}</List.Item>
          ))}
        </List>
      )}
      {(score || slices) && (
        <Text size="sm" mt={6}>
          {[score, slices].filter(Boolean).join(' ')}
        </Text>
      )}
    </Alert>
  );
}

interface WithheldNoticeProps {
  subject?: Subject;
}

/** Shown instead of empty result tables when the server withheld the classifier outputs. */
export function WithheldNotice({ subject = 'image' }: WithheldNoticeProps) {
  const again =
    subject === 'study'
      ? 'To see them anyway, upload the series again with “Show model outputs even for images unlike the training slices” ticked.'
      : 'To see them anyway, run the analysis again with “Show model outputs even for images unlike the training slices” ticked.';
  return (
    <Alert
      color="gray"
      variant="light"
      icon={<IconEyeOff size={20} aria-hidden />}
      title="Model outputs withheld"
      role="note"
      data-testid="withheld-notice"
    >
      <Text size="sm">
        AS status, stage and heatmaps are not shown because the {subject === 'study' ? 'series' : 'image'} is
        unlike the slices the models were trained on: their answers would not be meaningful.
        {subject === 'study' ? ' The segmentation is still shown.' : ''} {again} They stay flagged as out of the
        domain.
      </Text>
    </Alert>
  );
}

/** One line for places that list results: in the domain, out of it, or not checked. */
export function DomainFlag({ inDomain }: { inDomain: boolean | null | undefined }) {
  if (inDomain === null || inDomain === undefined) {
    return (
      <Group gap={4} wrap="nowrap">
        <IconInfoCircle size={14} aria-hidden color="var(--mantine-color-gray-7)" />
        <Text size="sm" c="dimmed">
          —
        </Text>
      </Group>
    );
  }
  return (
    <Group gap={4} wrap="nowrap">
      {inDomain ? (
        <IconCircleCheck size={14} aria-hidden color="var(--mantine-color-teal-9)" />
      ) : (
        <IconAlertTriangle size={14} aria-hidden color="#8a3200" />
      )}
      <Text size="sm">{inDomain ? 'In domain' : 'Out of domain'}</Text>
    </Group>
  );
}
