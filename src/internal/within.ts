/** Waits for `promise` (never throwing) but not past `deadline` (epoch milliseconds). */
export async function within(promise: Promise<unknown> | undefined, deadline: number): Promise<void> {
  if (!promise) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    promise.then(
      () => {},
      () => {},
    ),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - Date.now())))),
  ]);
  clearTimeout(timer);
}
