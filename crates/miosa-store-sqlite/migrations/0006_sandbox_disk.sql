-- Each sandbox's disk size in MiB (NULL: made before disks were limited).
ALTER TABLE sandboxes ADD COLUMN disk_mb INTEGER
    CHECK (disk_mb IS NULL OR disk_mb BETWEEN 0 AND 4294967295);
