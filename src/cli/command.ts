/** One `pg-once <name>` command: a one-line summary for the usage text, and its runner. */
export interface Command {
  summary: string;
  /**
   * Receives the arguments after the command's name; throws to fail (see src/cli.ts). May resolve
   * to an exit status for a command that completes but reports a failure (`doctor`).
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: most commands are `async run() {}`, typed Promise<void>, which Promise<undefined | number> would refuse.
  run(args: string[]): Promise<void | number>;
}
