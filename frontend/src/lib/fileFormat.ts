/**
 * Recognise an upload by its first bytes, as the server does, so an obviously wrong file
 * (a document, a text file) is refused at once with a clear message instead of after an upload.
 */
export type ImageKind = 'png' | 'jpeg' | 'dicom' | 'nifti' | 'npy';

export const KIND_LABELS: Record<ImageKind, string> = {
  png: 'PNG',
  jpeg: 'JPEG',
  dicom: 'DICOM',
  nifti: 'NIfTI',
  npy: 'NumPy .npy',
};

export const SUPPORTED_TEXT = 'PNG, JPEG, DICOM, NIfTI (.nii, .nii.gz) or NumPy .npy';
export const HEADER_BYTES = 352;

const startsWith = (bytes: Uint8Array, sig: number[], offset = 0) =>
  bytes.length >= offset + sig.length && sig.every((b, i) => bytes[offset + i] === b);

/** The image kind these header bytes announce, or null when none of ours. */
export function sniffFormat(bytes: Uint8Array, name = ''): ImageKind | null {
  if (startsWith(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(bytes, [0x44, 0x49, 0x43, 0x4d], 128)) return 'dicom';
  if (startsWith(bytes, [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59])) return 'npy';
  // NIfTI-1/2: header size 348 or 540 in either byte order, or the "n+1"/"ni1" magic.
  if (bytes.length >= 4) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const size = [view.getInt32(0, true), view.getInt32(0, false)];
    if (size.includes(348) || size.includes(540)) return 'nifti';
  }
  if (startsWith(bytes, [0x6e, 0x2b, 0x31, 0x00], 344) || startsWith(bytes, [0x6e, 0x69, 0x31, 0x00], 344)) {
    return 'nifti';
  }
  // Compressed NIfTI: a gzip stream is only ours when the name says so.
  if (startsWith(bytes, [0x1f, 0x8b]) && /\.nii\.gz$/i.test(name)) return 'nifti';
  // DICOM written without its 128-byte preamble starts with a group 0x0002 or 0x0008 tag;
  // the server makes the final call on anything named like DICOM.
  if (/\.(dcm|dicom|ima)$/i.test(name)) return 'dicom';
  if (startsWith(bytes, [0x02, 0x00]) || startsWith(bytes, [0x08, 0x00])) return 'dicom';
  return null;
}

export async function readHeader(file: Blob): Promise<Uint8Array> {
  const slice = file.slice(0, HEADER_BYTES);
  // Blob.arrayBuffer is missing in some test environments; FileReader works everywhere.
  if (typeof slice.arrayBuffer === 'function') return new Uint8Array(await slice.arrayBuffer());
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(new Uint8Array(reader.result as ArrayBuffer));
    reader.onerror = () => reject(reader.error ?? new Error('The file could not be read.'));
    reader.readAsArrayBuffer(slice);
  });
}

export function previewable(kind: ImageKind | null): boolean {
  return kind === 'png' || kind === 'jpeg';
}
