-- Each sandbox's disk size in MiB (NULL: made before disks were limited).
ALTER TABLE sandboxes ADD COLUMN disk_mb BIGINT
    CONSTRAINT sandboxes_disk_mb_check CHECK (disk_mb BETWEEN 0 AND 4294967295);
