/**
 * The files `migrate` applies to a database, by name: the newest baseline, then every numbered
 * file after it (read from sql/, so a new migration does not break every test that lists them).
 */
import { readdirSync } from 'node:fs';

const SQL_DIRECTORY = new URL('../../sql/', import.meta.url);

/** Numbered files after `version`, e.g. ['0007_bounded_claims']. */
export function numberedAfter(version: number): string[] {
  return readdirSync(SQL_DIRECTORY)
    .filter((file) => /^\d{4}_.+\.sql$/.test(file) && Number(file.slice(0, 4)) > version)
    .sort()
    .map((file) => file.slice(0, -'.sql'.length));
}

/** What a database without pg-once gets: the baseline of 0005 and what came after it. */
export const SHIPPED_FOR_NEW_DATABASE = ['baseline/0005_baseline', ...numberedAfter(5)];

/** The schema version `migrate` reports after applying them. */
export const LATEST_VERSION = Math.max(5, ...numberedAfter(5).map((name) => Number(name.slice(0, 4))));
