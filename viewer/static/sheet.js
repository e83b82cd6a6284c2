// The bottom sheet the page opens for buying, paying, results and the bag (one at a time).

export function openSheet(...children) {
  const sheet = document.getElementById("sheet");
  const body = document.getElementById("sheet-body");
  body.replaceChildren(...children);
  sheet.hidden = false;
  return body;
}

export function closeSheet() {
  document.getElementById("sheet").hidden = true;
  document.getElementById("sheet-body").replaceChildren();
}
