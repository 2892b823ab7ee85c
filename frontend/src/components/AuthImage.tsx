import { Center, Image, Skeleton, type ImageProps } from '@mantine/core';
import { IconPhotoOff } from '@tabler/icons-react';
import { useArtifactUrl } from '../api/artifacts';

interface AuthImageProps extends Omit<ImageProps, 'src'> {
  url: string | null | undefined;
  alt: string;
  height: number | string;
  width?: number | string;
}

/** An image from a private artifact URL, fetched with the session's credentials. */
export function AuthImage({ url, alt, height, width = height, ...rest }: AuthImageProps) {
  const artifact = useArtifactUrl(url);
  if (!url || artifact.isError) {
    return (
      <Center w={width} h={height} bg="gray.1" style={{ borderRadius: 6 }} aria-label={`${alt} (not available)`} role="img">
        <IconPhotoOff size={18} color="var(--mantine-color-gray-6)" aria-hidden />
      </Center>
    );
  }
  if (!artifact.url) return <Skeleton w={width} h={height} radius="sm" aria-label={`Loading ${alt}`} />;
  return <Image src={artifact.url} alt={alt} w={width} h={height} radius="sm" fit="contain" bg="black" {...rest} />;
}
