// Strategy receivers (ALM-3): plain addresses and accounts of the strategy's owner. The editors
// take typed addresses and ticked accounts; the lists show accounts by name. An account is
// notified at its email of the moment, so only its id is stored.

import { get } from "./api.js";
import { checkbox, h } from "./ui.js";

/** The accounts a strategy of `owner` (`enterprises/3`, `channels/2`) may notify. */
export async function receiverAccounts(owner) {
  return (await get(`/api/v1/${owner}/alarm-receiver-accounts`)).items;
}

/** An account as a list shows it: its contact name and email, and whether it is frozen. */
export function accountName(a) {
  return (a.name ? `${a.name} <${a.email}>` : a.email) + (a.frozen ? " (frozen)" : "");
}

/** A receiver as a list shows it (an account missing from `accounts` by its id). */
export function receiverText(r, accounts) {
  if (typeof r === "string") return r;
  if (r.email) return r.email;
  const a = (accounts || []).find((x) => x.id === r.account);
  return a ? accountName(a) : `account ${r.account}`;
}

/** The plain addresses among `receivers`, one per line, for an editor's textarea. */
export function addressLines(receivers) {
  return receivers.filter((r) => typeof r === "string" || r.email).map((r) => (typeof r === "string" ? r : r.email)).join("\n");
}

/** An editor's account checkboxes (`#receiver-accounts`), ticked for the accounts in `receivers`. */
export function accountChoices(accounts, receivers) {
  const chosen = new Set(receivers.filter((r) => r.account != null).map((r) => r.account));
  return h("fieldset", { id: "receiver-accounts" }, h("legend", {}, "Accounts (notified at their current email)"),
    accounts.length ? accounts.map((a) => checkbox("account_" + a.id, accountName(a), chosen.has(a.id))) : h("p", { class: "muted" }, "No accounts to choose."));
}

/** The receivers of an editor's form elements `f`: the typed addresses, then the ticked accounts. */
export function formReceivers(f, accounts) {
  const typed = f.receivers.value.split(/[\n,]/).map((r) => r.trim()).filter(Boolean).map((email) => ({ email }));
  const ticked = accounts.filter((a) => f["account_" + a.id] && f["account_" + a.id].checked).map((a) => ({ account: a.id }));
  return typed.concat(ticked);
}
