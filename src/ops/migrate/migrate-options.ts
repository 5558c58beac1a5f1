/** migrate's options (../migrate.ts). */
import { z } from 'zod';
import { callback } from '../../options.ts';
import { rolePrefixSchema } from '../../roles.ts';

export const migrateOptionsSchema = z
  .object({
    /**
     * Also install (or upgrade) graphile-worker's schema, which the relay runs on, so no separate
     * step is needed. (Default: true)
     */
    installWorkerSchema: z.boolean().default(true),
    /**
     * Names this database's roles at install: `<rolePrefix>_app`, `_relay` and `_maintenance`.
     * Roles are cluster-wide, so every database gets its own. Later runs use the installed roles
     * and refuse a different prefix. (Default: `once_<database name>`; see `pg-once roles`)
     */
    rolePrefix: rolePrefixSchema.optional(),
    /** Receives one line per applied migration (after the commit) and per notable step. (Default: silent) */
    onLog: callback<(message: string) => void>().optional(),
  })
  .strict();
/** Options of {@link migrate}. */
export interface MigrateOptions {
  /**
   * Also install (or upgrade) graphile-worker's schema, which the relay runs on, so no separate
   * step is needed. (Default: true)
   */
  installWorkerSchema?: boolean;
  /**
   * Names this database's roles at install: `<rolePrefix>_app`, `_relay` and `_maintenance`.
   * Roles are cluster-wide, so every database gets its own. Later runs use the installed roles
   * and refuse a different prefix. (Default: `once_<database name>`; see `pg-once roles`)
   */
  rolePrefix?: string;
  /** Receives one line per applied migration (after the commit) and per notable step. (Default: silent) */
  onLog?: (message: string) => void;
}
export type ResolvedMigrateOptions = z.output<typeof migrateOptionsSchema>;
