/** What the demo counts: every call the tool server received and how it ended. */
import { canonicalJson } from '../../src/index.ts';
import { type CallOutcome, type Reply, type ToolCall, toolCallKey } from './tool-server.ts';

export class DemoStats {
  readonly calls: Record<CallOutcome, number> = { executed: 0, replayed: 0, waited: 0, rejected: 0, killed: 0 };
  runsDone = 0;
  /** The first answer per (tenant, key), to compare every later answer with. */
  private readonly firstAnswers = new Map<string, string>();
  /** Answers to duplicates compared with the first answer, and how many differed. */
  readonly answers = { compared: 0, different: 0 };

  get received(): number {
    return Object.values(this.calls).reduce((sum, n) => sum + n, 0);
  }

  record(call: ToolCall, reply: Reply): void {
    this.calls[reply.outcome] += 1;
    if (reply.outcome === 'rejected') return;
    const id = `${call.tenantId}\u0000${toolCallKey(call)}`;
    const answer = canonicalJson(reply.result);
    const first = this.firstAnswers.get(id);
    if (first === undefined) {
      this.firstAnswers.set(id, answer);
    } else {
      this.answers.compared += 1;
      if (first !== answer) this.answers.different += 1;
    }
  }

  recordKilled(): void {
    this.calls.killed += 1;
  }
}
