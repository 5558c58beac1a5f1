/**
 * A value made once per transaction object and kept while it lives: adapters whose
 * TransactionClient is asked for several times in one transaction (withTenant, then each
 * runIdempotent and enqueue) build it once.
 */
export function perTransaction<Tx extends object, V>(make: (tx: Tx) => V): (tx: Tx) => V {
  const made = new WeakMap<Tx, V>();
  return (tx) => {
    let value = made.get(tx);
    if (value === undefined) {
      value = make(tx);
      made.set(tx, value);
    }
    return value;
  };
}
