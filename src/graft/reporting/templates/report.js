document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var up = th.dataset.dir !== 'up'; th.dataset.dir = up ? 'up' : 'down';
      rows.sort(function (a, b) {
        var x = a.cells[column], y = b.cells[column];
        var u = x.dataset.value !== undefined ? parseFloat(x.dataset.value) : x.textContent;
        var v = y.dataset.value !== undefined ? parseFloat(y.dataset.value) : y.textContent;
        return (u > v ? 1 : u < v ? -1 : 0) * (up ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.querySelectorAll('section.evaluation').forEach(function (section) {
  var view = section.querySelector('.cell-view'), store = section.querySelector('template.all-images');
  section.querySelectorAll('.matrix td.cell').forEach(function (cell) {
    cell.addEventListener('click', function () {
      section.querySelectorAll('.matrix td.selected').forEach(function (c) { c.classList.remove('selected'); });
      cell.classList.add('selected');
      var chosen = Array.from(store.content.querySelectorAll('figure')).filter(function (f) {
        return f.dataset.true === cell.dataset.true && f.dataset.pred === cell.dataset.pred;
      });
      var rowName = cell.parentElement.querySelector('th').textContent;
      var colName = section.querySelectorAll('.matrix th.col')[parseInt(cell.dataset.pred)].textContent;
      view.innerHTML = '<h3></h3><div class="gallery cell-gallery"></div>';
      view.querySelector('h3').textContent = chosen.length + ' image(s): true ' + rowName + ', predicted ' + colName;
      var gallery = view.querySelector('.cell-gallery');
      chosen.forEach(function (f) { gallery.appendChild(f.cloneNode(true)); });
    });
  });
});
function countLoaded() {
  var images = Array.from(document.querySelectorAll('img'));
  document.body.dataset.loadedImages = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.images = images.length;
}
window.addEventListener('load', function () {
  var match = /cell=(\d+),(\d+)/.exec(decodeURIComponent(location.hash));
  if (match) {
    var cell = document.getElementById('validation-cell-' + match[1] + '-' + match[2]);
    if (cell) cell.click();
  }
  countLoaded();
  setTimeout(countLoaded, 200);
});
