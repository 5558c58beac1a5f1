/**
 * CPU time from /proc, for benches that ask which process ran out of CPU first: a process's user +
 * system time, and the whole machine's busy time. Linux only; a process that has exited reads as
 * undefined (its time is lost, so read before stopping what you measure).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

/** Clock ticks per second of /proc's counters (USER_HZ; 100 on every Linux we run on). */
const TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** User + system CPU seconds a process has used so far. */
export function processCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces: the fields after it start past the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of the line, 12th and 13th after the name.
    return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/** CPU seconds the whole machine has spent busy (all but idle and iowait), summed over its cores. */
export function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  // user nice system idle iowait irq softirq steal (guest time is already counted in user).
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = ticks.reduce((sum, value) => sum + value, 0);
  // idle and iowait are the 4th and 5th counters.
  return (total - ticks[3]! - ticks[4]!) / TICKS_PER_SECOND;
}

/**
 * CPU seconds used so far by every process whose command is `name` (e.g. all of a Postgres
 * server's processes: backends of every database, WAL writer, checkpointer), by pid.
 */
export function cpuSecondsByCommand(name: string): Map<number, number> {
  const byPid = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== name) continue;
      const seconds = processCpuSeconds(Number(entry));
      if (seconds !== undefined) byPid.set(Number(entry), seconds);
    } catch {
      // gone meanwhile
    }
  }
  return byPid;
}

/** CPU seconds the processes of `after` used since `before` (a process new in `after` counts from 0). */
export function cpuSecondsSince(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, seconds] of after) total += seconds - (before.get(pid) ?? 0);
  return total;
}
