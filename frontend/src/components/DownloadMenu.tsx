import { Button, Menu } from '@mantine/core';
import { notifications } from '@mantine/notifications';
import { IconDownload, IconFileCode, IconPhoto } from '@tabler/icons-react';
import { fetchArtifact, saveBlob } from '../api/artifacts';
import { errorMessage } from '../api/errors';

export interface DownloadItem {
  label: string;
  url: string;
  filename: string;
}

interface DownloadMenuProps {
  items: DownloadItem[];
  json: unknown;
  jsonName: string;
}

/** Overlays are fetched with credentials at click time; the JSON is the stored result itself. */
export function DownloadMenu({ items, json, jsonName }: DownloadMenuProps) {
  const download = async (item: DownloadItem) => {
    try {
      saveBlob(await fetchArtifact(item.url), item.filename);
    } catch (error) {
      notifications.show({ color: 'red', title: 'Download failed', message: errorMessage(error) });
    }
  };
  return (
    <Menu position="bottom-end" withinPortal>
      <Menu.Target>
        <Button variant="default" leftSection={<IconDownload size={16} aria-hidden />}>
          Download
        </Button>
      </Menu.Target>
      <Menu.Dropdown>
        <Menu.Label>Result</Menu.Label>
        <Menu.Item
          leftSection={<IconFileCode size={16} aria-hidden />}
          onClick={() =>
            saveBlob(new Blob([JSON.stringify(json, null, 2)], { type: 'application/json' }), jsonName)
          }
        >
          Result (JSON)
        </Menu.Item>
        {items.length > 0 && <Menu.Label>Images (PNG)</Menu.Label>}
        {items.map((item) => (
          <Menu.Item
            key={item.url}
            leftSection={<IconPhoto size={16} aria-hidden />}
            onClick={() => void download(item)}
          >
            {item.label}
          </Menu.Item>
        ))}
      </Menu.Dropdown>
    </Menu>
  );
}
